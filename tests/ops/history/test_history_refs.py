"""``snapws log``, ``show``, ``reflog``, ``branch`` and ``tag``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

History = tuple[Workspace, list[str]]


def build(make: WorkspaceFactory) -> History:
    """main: c0 - c1 - c2 - c3; feat: from c1, one commit f1, made between c2
    and c3. HEAD on main. Returns (ws, [c0, c1, c2, c3, f1])."""
    ws = make(spec={"a": "0"})
    ids = [ws.head()]
    for i in (1, 2):
        (ws.path / "a").write_text(str(i))
        ids.append(ws.commit(f"c{i}\n\nbody {i}"))
    ws.run("checkout", "-b", "feat", ids[1])
    (ws.path / "f").write_text("f")
    f1 = ws.commit("f1")
    ws.run("checkout", "main")
    (ws.path / "a").write_text("3")
    ids.append(ws.commit("c3\n\nbody 3"))
    return ws, [*ids, f1]


@pytest.fixture(scope="module")
def shared(make_module_workspace: WorkspaceFactory) -> History:
    """Read-only tests share this history."""
    return build(make_module_workspace)


@pytest.fixture
def hist(make_workspace: WorkspaceFactory) -> History:
    return build(make_workspace)


# ---- revisions, log, show -----------------------------------------------------


def test_relative_revisions(shared: History) -> None:
    ws, ids = shared
    c0, c1, c2, c3, f1 = ids
    cases = {
        "HEAD": c3,
        "@": c3,
        "HEAD~": c2,
        "HEAD~1": c2,
        "HEAD~3": c0,
        "HEAD^": c2,
        "HEAD^^": c1,
        "main~2": c1,
        "main^1~1": c1,
        "feat": f1,
        "feat^": c1,
        "feat~2": c0,
        f"{c2[:8]}^": c1,
        c3[:6]: c3,
    }
    for rev, want in cases.items():
        got = ws.json("show", rev)["id"]
        assert got == want, rev


def test_log_default_and_limit(shared: History) -> None:
    ws, ids = shared
    c0, c1, c2, c3, _ = ids
    assert ws.log_ids() == [c3, c2, c1, c0]
    r = ws.run("log", "--oneline", "-n", "2")
    assert r.stdout.splitlines() == [f"{c3[:12]} (HEAD -> main) c3", f"{c2[:12]} c2"]
    assert ws.run("log", "--oneline", "-n", "0").stdout == ""
    assert [e["id"] for e in ws.json("log", "-n", "3", "feat")["snapshots"]] == [ids[4], c1, c0]
    full = ws.run("log", "-n", "1").stdout.splitlines()
    assert full[0] == f"snapshot {c3} (HEAD -> main)"
    assert full[1] == "Author: Test Author <test@example.org>"
    assert full[2].startswith("Date:   ")
    assert full[3:] == ["", "    c3", "    ", "    body 3"]


def test_log_json(shared: History) -> None:
    ws, ids = shared
    c0, c1, c2, c3, _ = ids
    out = ws.json("log")["snapshots"]
    assert [e["id"] for e in out] == [c3, c2, c1, c0]
    assert out[0]["parents"] == [c2]
    assert out[-1]["parents"] == []
    assert out[0]["message"] == "c3\n\nbody 3"
    assert out[0]["refs"] == ["main"]
    assert out[-1]["message"] == "initial snapshot"
    assert set(out[0]) >= {"id", "parents", "layer", "message", "author", "time", "refs"}
    everything = ws.json("log", "--all")["snapshots"]
    assert sorted(e["id"] for e in everything) == sorted(ids)


def test_log_graph_all(shared: History) -> None:
    ws, ids = shared
    c0, c1, _, c3, f1 = ids
    lines = ws.run("log", "--graph", "--all").stdout.splitlines()
    text = "\n".join(lines)
    node_lines = [line for line in lines if "*" in line]
    assert len(node_lines) == 5
    assert any(f"{c3[:12]} (HEAD -> main) c3" in line for line in node_lines)
    assert any(f"{f1[:12]} (feat) f1" in line for line in node_lines)
    assert any(f"{c1[:12]} c1" in line for line in node_lines)
    # two lines of history run side by side until they meet at c1
    assert any(line.startswith("| *") or line.startswith("* |") for line in lines), text
    assert lines[-1].startswith("* ")
    assert c0[:12] in lines[-1]
    # without --all only main's history is drawn
    plain = ws.run("log", "--graph").stdout.splitlines()
    assert [line[:2] for line in plain] == ["* "] * 4
    assert f1[:12] not in "\n".join(plain)


def graph_problems(lines: list[str], parents: dict[str, list[str]]) -> list[str]:
    """Check an ASCII graph (``log --graph --oneline``) edge by edge: each lane
    (column) carries the id of the snapshot it must lead to; ``|`` keeps a
    lane, ``/`` and ``\\`` move it one column; a node must sit on the lane(s)
    expecting it. Returns the problems found (empty: the graph is right)."""
    by_short = {p[:12]: p for p in parents}
    lanes: dict[int, str] = {}
    problems: list[str] = []
    for n, line in enumerate(lines, 1):
        m = re.search(r"\b([0-9a-f]{12})\b", line)
        art = line[: m.start()].rstrip() if m else line.rstrip()
        if m:  # a node row
            sid = by_short[m.group(1)]
            cols = {i // 2: ch for i, ch in enumerate(art) if ch != " "}
            stars = [c for c, ch in cols.items() if ch == "*"]
            if len(stars) != 1 or any(ch not in "*|" for ch in cols.values()):
                problems.append(f"line {n}: bad node row {line!r}")
                continue
            (c,) = stars
            for lane in set(lanes) - set(cols):
                problems.append(f"line {n}: lane {lane} (to {lanes[lane][:12]}) vanished")
            for col in set(cols) - set(lanes) - {c}:
                problems.append(f"line {n}: lane {col} comes from nowhere")
            for lane, want in lanes.items():
                if want == sid and lane != c:
                    problems.append(f"line {n}: lane {lane} should join {sid[:12]}")
            if c in lanes and lanes[c] != sid:
                problems.append(f"line {n}: {sid[:12]} drawn on the lane to {lanes[c][:12]}")
            lanes = {k: v for k, v in lanes.items() if k in cols}
            if parents[sid]:
                lanes[c] = parents[sid][0]
            else:
                lanes.pop(c, None)
            continue
        moved: dict[int, str] = {}
        used: set[int] = set()
        for i, ch in enumerate(art):
            src, dst = {
                "|": (i // 2, i // 2),
                "/": (i // 2 + 1, i // 2),
                "\\": (i // 2, i // 2 + 1),
            }.get(ch, (None, None))
            if ch == " " or src is None or dst is None:
                continue
            if src not in lanes:
                problems.append(f"line {n}: {ch!r} continues no lane")
                continue
            used.add(src)
            if dst in moved and moved[dst] != lanes[src]:
                problems.append(
                    f"line {n}: joins the lane to {lanes[src][:12]} into {moved[dst][:12]}"
                )
            moved[dst] = lanes[src]
        for lane in set(lanes) - used:
            problems.append(f"line {n}: lane {lane} (to {lanes[lane][:12]}) vanished")
        lanes = moved
    if lanes:
        problems.append(f"lanes left open at the end: {lanes}")
    return problems


def test_log_graph_edges_are_right(shared: History) -> None:
    ws, _ = shared
    parents = {e["id"]: e["parents"] for e in ws.json("log", "--all")["snapshots"]}
    lines = ws.run("log", "--graph", "--all", "--oneline").stdout.splitlines()
    assert graph_problems(lines, parents) == [], "\n".join(lines)


def test_graph_checker_accepts_a_right_graph(shared: History) -> None:
    """The checker above accepts a correct drawing (so its xfail is the
    renderer's fault) and rejects wrong ones."""
    _, ids = shared
    c0, c1, c2, c3, f1 = (i[:12] for i in ids)
    parents = {ids[0]: [], ids[1]: [ids[0]], ids[2]: [ids[1]], ids[3]: [ids[2]], ids[4]: [ids[1]]}
    right = [f"* {c3} c3", f"| * {f1} f1", f"* | {c2} c2", "|/", f"* {c1} c1", f"* {c0} c0"]
    assert graph_problems(right, parents) == []
    missing_join = [f"* {c3} c3", f"| * {f1} f1", f"* | {c2} c2", f"* {c1} c1", f"* {c0} c0"]
    assert graph_problems(missing_join, parents) != []
    wrong_lane = [f"* {c3} c3", f"| * {f1} f1", f"| * {c2} c2", "|/", f"* {c1} c1", f"* {c0} c0"]
    assert graph_problems(wrong_lane, parents) != []


def test_show(shared: History) -> None:
    ws, ids = shared
    r = ws.run("show", "HEAD~1")
    lines = r.stdout.splitlines()
    assert lines[0] == f"snapshot {ids[2]}"
    assert lines[1] == "Author: Test Author <test@example.org>"
    assert lines[3].startswith("Layer:  ")
    assert lines[5:] == ["    c2", "    ", "    body 2", "", " 1 change (1 modified)", "  M  a"]
    out = ws.json("show", "feat")
    assert out["id"] == ids[4]
    assert out["refs"] == ["feat"]
    assert [(c["path"], c["status"]) for c in out["changes"]] == [("f", "A")]
    assert ws.run("show", "--name-only", "HEAD~3").stdout == "a\n"


def test_show_unknown(shared: History) -> None:
    ws, _ = shared
    r = ws.run("show", "nosuch", check=False)
    assert r.returncode == 4
    assert "unknown revision 'nosuch'" in r.stderr


# ---- reflog -------------------------------------------------------------------


def test_reflog(shared: History) -> None:
    ws, ids = shared
    c0, c1, c2, c3, f1 = ids
    lines = ws.run("reflog").stdout.splitlines()
    assert lines == [
        f"{c3[:12]} HEAD@{{0}}: commit: c3",
        f"{c2[:12]} HEAD@{{1}}: checkout: moving from feat to main",
        f"{f1[:12]} HEAD@{{2}}: commit: f1",
        f"{c1[:12]} HEAD@{{3}}: checkout: moving from main to {c1}",
        f"{c2[:12]} HEAD@{{4}}: commit: c2",
        f"{c1[:12]} HEAD@{{5}}: commit: c1",
        f"{c0[:12]} HEAD@{{6}}: init",
    ]
    assert ws.run("reflog", "-n", "2").stdout.splitlines() == lines[:2]
    main = ws.run("reflog", "main").stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in main] == [c3[:12], c2[:12], c1[:12], c0[:12]]
    assert main[0] == f"{c3[:12]} main@{{0}}: commit: c3"
    feat = ws.json("reflog", "feat")["entries"]
    assert [(e["previous"], e["id"]) for e in feat] == [(c1, f1), (None, c1)]


# ---- branches -----------------------------------------------------------------


def test_branch_list(shared: History) -> None:
    ws, ids = shared
    lines = ws.run("branch").stdout.splitlines()
    assert [line.split() for line in lines] == [["feat", ids[4][:12]], ["*", "main", ids[3][:12]]]
    assert ws.json("branch") == {
        "version": 1,
        "branches": [
            {"name": "feat", "id": ids[4], "current": False},
            {"name": "main", "id": ids[3], "current": True},
        ],
        "namespace": "",  # the store's first workspace: its root namespace
    }


def test_branch_create_and_delete(hist: History) -> None:
    ws, ids = hist
    r = ws.run("branch", "topic", "HEAD~2")
    assert f"branch topic -> {ids[1][:12]}" in r.stderr
    assert {b["name"]: b["id"] for b in ws.json("branch")["branches"]}["topic"] == ids[1]
    r = ws.run("branch", "topic", check=False)
    assert r.returncode == 8
    assert "a branch named 'topic' already exists" in r.stderr
    ws.run("branch", "-f", "topic")
    assert {b["name"]: b["id"] for b in ws.json("branch")["branches"]}["topic"] == ids[3]
    ws.run("branch", "group/sub")
    r = ws.run("branch", "-d", "topic")
    assert r.stdout == f"Deleted branch topic (was {ids[3][:12]}).\n"
    names = [b["name"] for b in ws.json("branch")["branches"]]
    assert names == ["feat", "group/sub", "main"]
    r = ws.run("branch", "-d", "topic", check=False)
    assert r.returncode == 4
    assert "no branch named 'topic'" in r.stderr
    # the snapshots stay reachable by id after the branch is gone (-D: not merged)
    ws.run("branch", "-D", "feat")
    assert ws.json("show", ids[4])["id"] == ids[4]


def test_branch_delete_current_refused(hist: History) -> None:
    ws, _ = hist
    r = ws.run("branch", "-d", "main", check=False)
    assert r.returncode == 8
    assert "snapws: error: cannot delete branch 'main'" in r.stderr
    assert "hint: check out another branch first" in r.stderr
    assert {b["name"] for b in ws.json("branch")["branches"]} == {"main", "feat"}


def test_branch_delete_checked_out_elsewhere_refused(mount_guard: Path) -> None:
    """Workspaces that share a namespace on purpose share its branches."""
    store = mount_guard / "store"
    for name, branch in (("one", "main"), ("two", "second")):
        path = mount_guard / name
        run_cli(
            "--store", store, "init", "--namespace", "team", "-b", branch, path, cwd=store.parent
        )
    one = Workspace(mount_guard / "one", store, mount_guard)
    r = one.run("branch", "-d", "second", check=False)
    assert r.returncode == 8
    assert str(mount_guard / "two") in r.stderr


@pytest.mark.parametrize(
    "name",
    ["a..b", "x.lock", "-x", "has space", "a~1", "q?", "a/.b", "end/", "HEAD", "deadbeef"],
)
def test_invalid_branch_names(shared: History, name: str) -> None:
    ws, _ = shared
    r = ws.run("branch", "--", name, check=False)
    assert r.returncode == 8, r.stderr
    assert f"snapws: error: invalid branch name {name!r}" in r.stderr
    assert "hint: names follow git's rules" in r.stderr


def test_invalid_names_everywhere(shared: History) -> None:
    ws, _ = shared
    for args in (("tag", "--", "x.lock"), ("checkout", "-b", "a..b")):
        r = ws.run(*args, check=False)
        assert r.returncode == 8, args
        assert "invalid" in r.stderr
    assert [b["name"] for b in ws.json("branch")["branches"]] == ["feat", "main"]
    assert ws.json("tag")["tags"] == []


# ---- tags ---------------------------------------------------------------------


def test_tags(hist: History) -> None:
    ws, ids = hist
    assert ws.run("tag").stdout == ""
    ws.run("tag", "v1", "HEAD~2")
    ws.run("tag", "v2")
    lines = ws.run("tag").stdout.splitlines()
    assert [line.split() for line in lines] == [["v1", ids[1][:12]], ["v2", ids[3][:12]]]
    assert ws.json("tag")["tags"] == [
        {"name": "v1", "id": ids[1], "current": False},
        {"name": "v2", "id": ids[3], "current": False},
    ]
    assert ws.json("show", "v1")["id"] == ids[1]
    assert ws.json("show", "v1")["refs"] == ["tag: v1"]
    oneline = ws.run("log", "--oneline").stdout.splitlines()
    assert oneline[0] == f"{ids[3][:12]} (HEAD -> main, tag: v2) c3"
    r = ws.run("tag", "v1", check=False)
    assert r.returncode == 8
    assert "a tag named 'v1' already exists" in r.stderr
    r = ws.run("tag", "-d", "v1")
    assert r.stdout == f"Deleted tag 'v1' (was {ids[1][:12]})\n"
    assert [t["name"] for t in ws.json("tag")["tags"]] == ["v2"]
    r = ws.run("tag", "-d", "v1", check=False)
    assert r.returncode == 4
    assert "no tag named 'v1'" in r.stderr
    r = ws.run("show", "v1", check=False)
    assert r.returncode == 4
