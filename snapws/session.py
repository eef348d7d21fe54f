"""An opened workspace, as the backends and the operations see it: its store,
its recorded state, the settings, and a cache of content hashes.

It sits below the backends (which take it in their workspace hooks) and the
operations (which open it: :func:`snapws.ops.session.open_session`), and
knows nothing of either."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from snapws.config import Config
from snapws.ids import LayerId, SnapshotId
from snapws.layers.ignore import IgnoreRules
from snapws.layers.manifestdiff import ManifestChain, SortedManifest
from snapws.layers.view import ChainView, HashCache
from snapws.model import WorkspaceState
from snapws.store.store import Store


@dataclass(slots=True)
class Session:
    """An opened workspace: its store, its recorded state and the settings.

    Preconditions of its users: the store's lock is held (shared to read,
    exclusive to change anything)."""

    store: Store
    state: WorkspaceState
    config: Config
    hashes: HashCache
    _manifests: dict[LayerId, SortedManifest] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The workspace's directory (what the user works in)."""
        return Path(self.state.path)

    @property
    def wsdir(self) -> Path:
        """The workspace's own directory in the store (state, upperdirs, index)."""
        return self.store.workspace_dir(self.state.id)

    @property
    def upper(self) -> Path:
        """The directory the state names as its upperdir (backends with one)."""
        return self.wsdir / self.state.upper

    def head_ref(self) -> str:
        """The name of HEAD's reflog."""
        return f"workspaces/{self.state.id.hex}/HEAD"

    def chain_view(self, sid: SnapshotId) -> ChainView:
        """The tree of snapshot ``sid``: its layer chain, read from the store."""
        return ChainView([os.fsencode(p) for p in self.store.layer_trees(sid)], self.hashes)

    def manifest_chain(self, sid: SnapshotId) -> ManifestChain:
        """The tree of snapshot ``sid`` as its layers' manifests (each layer's
        opened once in this session). Raises as
        :func:`snapws.store.manifests.manifest_chain`."""
        from snapws.store.manifests import manifest_chain

        return manifest_chain(self.store, sid, self._manifests)

    def ignore_rules(self) -> IgnoreRules:
        """The rules of the working tree: its ``.snapwsignore`` files (read
        through the workspace path) below the configuration's ``ignore``."""
        return IgnoreRules.for_tree(os.fsencode(self.path), self.config.ignore)

    def reload(self) -> None:
        """Read the workspace's state again (after an operation changed it)."""
        self.state = self.store.read_workspace(self.state.id)
