"""`nftredir cni install` and `uninstall`: chain the plugin into a node's CNI conflist, and back out.

The conflist is the one the runtime uses: `--conflist NAME` in the directory, else the first
network configuration file by name (*.conf, *.conflist, *.json), as kubelet's runtimes pick it.
install appends `{"type": "nftredir-cni", ...keys}` as the last plugin (replacing an entry of
ours already there, so it is idempotent); uninstall removes it. Every write is atomic: a
temporary file in the same directory, fsynced, renamed over the conflist, so the runtime reads
either the old file or the new one, never half of one.

install keeps the original text beside the conflist (`.NAME.nftredir-orig`, a name no runtime
reads, with a hash of what install wrote); uninstall writes it back when the conflist is still exactly what install wrote, and
otherwise (another installer rewrote it since) removes only nftredir's entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nftredir.errors import ConfigError, SystemRefused

PLUGIN_TYPE = "nftredir-cni"
CONF_SUFFIXES = (".conf", ".conflist", ".json")


def find_conflist(conf_dir: str, name: str | None = None) -> Path:
    directory = Path(conf_dir)
    if name is not None:
        path = directory / name
        if Path(name).name != name or path.suffix not in CONF_SUFFIXES:
            raise ConfigError("--conflist", name, f"not a file name ending in {', '.join(CONF_SUFFIXES)}")
        return path
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in CONF_SUFFIXES and p.is_file())
    except OSError as exc:
        raise ConfigError("--conf-dir", conf_dir, f"cannot be listed: {exc.strerror}") from None
    if not files:
        raise ConfigError("--conf-dir", conf_dir, "holds no network configuration (*.conf, *.conflist, *.json)")
    return files[0]


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), str(path), f"cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), str(path), f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
        reason = ("a single-plugin configuration: nftredir chains only into a conflist (\"plugins\": [...])"
                  if isinstance(data, dict) and "type" in data else "not a conflist: no \"plugins\" list")
        raise ConfigError(str(path), str(path), reason)
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in data["plugins"]):
        raise ConfigError(str(path), str(path), "a plugin of the conflist is not an object with a \"type\"")
    return raw, data


def _backup(path: Path) -> Path:
    return path.with_name(f".{path.name}.nftredir-orig")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename, with the original's mode."""
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nftredir-tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise SystemRefused(f"cannot write {path}: {exc.strerror or exc}") from None


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def plugin_entry(keys: dict[str, Any], source: str = "--plugin-config") -> dict[str, Any]:
    """The plugin's conflist object; its keys and option values validated as ADD reads them."""
    from nftredir.cni_config import SPEC_KEYS, plugin_config
    from nftredir.config import build_config
    from nftredir.sources import merge_fsm

    for key in keys:
        if key in SPEC_KEYS:
            raise ConfigError(source, key, "a key the runtime sets, not the plugin's")
    build_config(merge_fsm(plugin_config(keys, source).options, {}))
    return {"type": PLUGIN_TYPE, **keys}


def _record(backup: Path) -> dict[str, Any]:
    """What install remembered: the original text (None when it never saw the file without its
    entry) and a hash of what it wrote; empty when there is no readable record."""
    try:
        record = json.loads(backup.read_text()) if backup.exists() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def install(conf_dir: str, keys: dict[str, Any], conflist: str | None = None, source: str = "--plugin-config") -> Path:
    """Chain the plugin, with `keys` (read from `source`), last into the conflist."""
    path = find_conflist(conf_dir, conflist)
    entry = plugin_entry(keys, source)
    raw, data = _read(path)
    plugins = [p for p in data["plugins"] if p.get("type") != PLUGIN_TYPE]
    backup = _backup(path)
    # The original is the file before the first install: a re-install keeps the one recorded,
    # and a file that already holds our entry without a record has no original to restore.
    installed = len(plugins) < len(data["plugins"])
    original = _record(backup).get("original") if installed else raw.decode()
    written = _dump({**data, "plugins": [*plugins, entry]})
    atomic_write(backup, json.dumps({"original": original, "written_sha256": hashlib.sha256(written).hexdigest()}).encode())
    atomic_write(path, written)
    return path


def uninstall(conf_dir: str, conflist: str | None = None) -> Path:
    path = find_conflist(conf_dir, conflist)
    raw, data = _read(path)
    backup = _backup(path)
    record = _record(backup)  # unreadable or absent: only nftredir's entry is removed
    if isinstance(record.get("original"), str) and record.get("written_sha256") == hashlib.sha256(raw).hexdigest():
        atomic_write(path, record["original"].encode())
    elif any(p.get("type") == PLUGIN_TYPE for p in data["plugins"]):
        atomic_write(path, _dump({**data, "plugins": [p for p in data["plugins"] if p.get("type") != PLUGIN_TYPE]}))
    backup.unlink(missing_ok=True)
    return path
