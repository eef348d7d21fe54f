"""Overlay mounts: plans (pure data), the mounter (the only syscalls) and busy-file scans."""
