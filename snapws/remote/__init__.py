"""Remotes: where snapshots travel to and from (OCI registries and OCI
layout directories). :mod:`snapws.remote.base` defines the interface."""
