"""pcfs: a FUSE file system that forgets, on command, every write not yet made durable.

The backing directory is "the disk"; this process's memory is "the page cache". A write lands in
a private page overlay and reaches the backing file only when the file is fsynced or fdatasynced
(or was opened O_SYNC/O_DSYNC). `cut` drops every overlay at once and freezes the file system
(every later operation fails with EIO), as a power cut would; unmounting afterwards loses nothing
more, and a fresh mount over the same directory is the machine after the reboot. This is LazyFS's
`clear-cache` (https://github.com/dsrhaslab/lazyfs) in about two hundred lines of Python.

Directory entries (create, unlink, rename, mkdir) pass straight through to the backing directory,
as in LazyFS: a file created and never dir-synced survives its cut (with no data). SQLite's WAL
lives inside files that already exist, so its durability is entirely about data.

SQLite's `-shm` wal-index is a shared writable mmap, which the kernel refuses on a direct_io FUSE
file (fs/fuse/file.c, `fuse_file_mmap`, unless FUSE_DIRECT_IO_ALLOW_MMAP is negotiated, which
Debian 12's libfuse 3.14 cannot). So every file is direct_io (each write(2) reaches us, in order,
nothing hides in the kernel's cache) except `*-shm`, which goes through the page cache; it is
never synced anyway, and a remount drops its pages.

`--lie-fsync` makes fsync report success without making anything durable: the negative control
that shows the power-cut test can fail.

Control: a Unix stream socket outside the mount, one command per line, one JSON reply per line:
`cut` (drop and freeze; replies with what was dropped), `cut tear SEED` (a random part of the
un-synced pages is written first, some torn), `stats` (operation counts), `ping`.

Run: python -m tests.powercut.pcfs BACKING MOUNTPOINT --ctl SOCKET [--lie-fsync]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import socket
import stat
import threading
from collections import Counter
from dataclasses import dataclass, field

import mfusepy as fuse

PAGE = 4096
_SYNC_FLAGS = os.O_SYNC | os.O_DSYNC


@dataclass
class Overlay:
    """The volatile state of one inode: page images not yet written to the backing file."""

    size: int    # the size the file has now
    floor: int   # backing bytes at or past this were truncated away since the last sync
    path: str    # the backing file, for a torn cut
    dirty: dict[int, bytearray] = field(default_factory=dict)


def _eio():
    return fuse.FuseOSError(errno.EIO)


def _kind(path: str) -> str:
    """The stats key of a file: `events.db-wal` -> `-wal`, `events.db` -> `db`."""
    name = os.path.basename(path)
    for suffix in ("-wal", "-shm", "-journal"):
        if name.endswith(suffix):
            return suffix
    return "db" if name.endswith(".db") else "other"


class PowerCutFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str, *, lie_fsync: bool = False):
        self.root = os.path.realpath(backing)  # libfuse chdirs to /: absolute paths only
        self.lie_fsync = lie_fsync
        self.mutex = threading.Lock()
        self.frozen = False
        self.overlays: dict[int, Overlay] = {}
        self.handles: dict[int, tuple[int, int, int]] = {}  # fh -> (fd, inode, open flags)
        self.next_fh = 1
        self.stats: Counter = Counter()

    # --- plumbing ----------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _guard(self):
        if self.frozen:
            raise _eio()

    def init_with_config(self, conn_info, config):
        if config is not None:
            config.entry_timeout = config.attr_timeout = config.negative_timeout = 0
            config.use_ino = 1
            config.hard_remove = 1
            config.kernel_cache = config.auto_cache = config.direct_io = 0

    def _direct_io(self, path: str) -> bool:
        return not path.endswith("-shm")

    def _open_handle(self, fd: int, flags: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = (fd, os.fstat(fd).st_ino, flags)
        return fh

    def _overlay(self, ino: int, fd: int, path: str) -> Overlay:
        ov = self.overlays.get(ino)
        if ov is None:
            size = os.fstat(fd).st_size
            ov = self.overlays[ino] = Overlay(size=size, floor=size,
                                              path=self._real(path) if path else "")
        return ov

    def _load(self, ov: Overlay, fd: int, pg: int) -> bytearray:
        start = pg * PAGE
        keep = max(0, min(PAGE, ov.floor - start))
        data = os.pread(fd, keep, start) if keep else b""
        return bytearray(data.ljust(PAGE, b"\0"))

    def _truncate(self, ov: Overlay, length: int) -> None:
        for pg in [pg for pg in ov.dirty if pg * PAGE >= length]:
            del ov.dirty[pg]
        pg, off = divmod(length, PAGE)
        if off and pg in ov.dirty:
            ov.dirty[pg][off:] = bytes(PAGE - off)
        ov.floor = min(ov.floor, length)
        ov.size = length

    def _sync(self, ino: int, fd: int, path: str, what: str) -> None:
        self.stats[f"{what} {_kind(path)}"] += 1
        if self.lie_fsync:
            return
        ov = self.overlays.pop(ino, None)
        if ov is None:
            return
        os.ftruncate(fd, ov.floor)
        os.ftruncate(fd, ov.size)
        for pg, img in ov.dirty.items():
            start = pg * PAGE
            if start < ov.size:
                os.pwrite(fd, bytes(img[:min(PAGE, ov.size - start)]), start)
        # The backing file is never fsynced: only the simulated machine loses power.

    # --- control -----------------------------------------------------------------------------
    def cut(self, seed: int | None = None) -> dict:
        """Power cut: every un-synced byte is gone, and nothing happens on this disk any more.

        With a seed the cut is torn, as SQLite's crash-test VFS does (sqlite.org/testing.html):
        a random half of the un-synced pages did reach the disk before the power went, some of
        them only in part (a prefix of 512-byte sectors). Every such state is one a real cut can
        leave; checksummed logs must recover from it.
        """
        with self.mutex:
            self.frozen = True
            dropped = {"files": len(self.overlays),
                       "pages": sum(len(ov.dirty) for ov in self.overlays.values()), "written": 0}
            if seed is not None:
                rng = random.Random(seed)
                for ino, ov in self.overlays.items():
                    dropped["written"] += self._tear(ino, ov, rng)
            self.overlays.clear()
            return dropped

    @staticmethod
    def _tear(ino: int, ov: Overlay, rng: random.Random) -> int:
        try:
            fd = os.open(ov.path, os.O_WRONLY)
        except OSError:
            return 0  # unlinked meanwhile
        written = 0
        try:
            if os.fstat(fd).st_ino != ino:
                return 0
            for pg, img in sorted(ov.dirty.items()):
                start = pg * PAGE
                if start >= ov.size or rng.random() < 0.5:
                    continue
                data = bytes(img[:min(PAGE, ov.size - start)])
                if rng.random() < 0.25:
                    data = data[:512 * rng.randrange(1, 8)]
                os.pwrite(fd, data, start)
                written += 1
        finally:
            os.close(fd)
        return written

    def serve_control(self, path: str) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(path):
            os.unlink(path)
        srv.bind(path)
        srv.listen(4)
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                cmd, *args = line.decode().split()
                if cmd == "cut":
                    reply = self.cut(int(args[1]) if args[:1] == ["tear"] else None)
                elif cmd == "stats":
                    with self.mutex:
                        reply = dict(self.stats)
                elif cmd == "ping":
                    reply = {"frozen": self.frozen}
                else:
                    reply = {"error": f"unknown command {cmd!r}"}
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    # --- namespace (passes through) ----------------------------------------------------------
    def getattr(self, path, fh=None):
        with self.mutex:
            self._guard()
            if fh is not None and fh.fh in self.handles:
                fd, ino, _ = self.handles[fh.fh]
                st = os.fstat(fd)
            else:
                st = os.lstat(self._real(path))
            attrs = {k: getattr(st, k) for k in (
                "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                "st_blksize", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            for k in ("atime", "mtime", "ctime"):
                attrs[f"st_{k}"] = attrs.pop(f"st_{k}_ns")
            ov = self.overlays.get(st.st_ino)
            if ov is not None:
                attrs["st_size"] = ov.size
                attrs["st_blocks"] = (ov.size + 511) // 512
            return attrs

    def readdir(self, path, fh):
        with self.mutex:
            self._guard()
            out = [(".", {"st_mode": stat.S_IFDIR}, 0), ("..", {"st_mode": stat.S_IFDIR}, 0)]
            with os.scandir(self._real(path)) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    out.append((entry.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
            return out

    def _passthrough(name):
        def op(self, path, *args):
            with self.mutex:
                self._guard()
                return getattr(os, name)(self._real(path), *args)
        op.__name__ = name
        return op

    mkdir = _passthrough("mkdir")
    rmdir = _passthrough("rmdir")
    chmod = _passthrough("chmod")
    readlink = _passthrough("readlink")
    del _passthrough

    def chown(self, path, uid, gid):
        with self.mutex:
            self._guard()
            os.lchown(self._real(path), uid, gid)

    def utimens(self, path, times=None):
        with self.mutex:
            self._guard()
            if times is None:
                os.utime(self._real(path), follow_symlinks=False)
            else:
                os.utime(self._real(path), ns=times, follow_symlinks=False)

    def mknod(self, path, mode, dev):
        with self.mutex:  # the daemon's live-feed unix socket lives in the state directory
            self._guard()
            os.mknod(self._real(path), mode, dev)

    def symlink(self, target, source):
        with self.mutex:
            self._guard()
            os.symlink(source, self._real(target))

    def rename(self, old, new):
        with self.mutex:
            self._guard()
            os.rename(self._real(old), self._real(new))

    def unlink(self, path):
        with self.mutex:
            self._guard()
            real = self._real(path)
            ino = os.lstat(real).st_ino
            os.unlink(real)
            if not any(h[1] == ino for h in self.handles.values()):
                self.overlays.pop(ino, None)

    def statfs(self, path):
        with self.mutex:
            self._guard()
            sv = os.statvfs(self._real(path))
            return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                                "f_bavail", "f_files", "f_ffree", "f_favail",
                                                "f_flag", "f_namemax")}

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self._guard()
            self.stats["fsyncdir"] += 1  # entries are durable at once here (see the docstring)
            return 0

    # --- files -------------------------------------------------------------------------------
    def create(self, path, mode, fi):
        with self.mutex:
            self._guard()
            flags = fi.flags
            fd = os.open(self._real(path), os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL), mode)
            fi.fh = self._open_handle(fd, flags)
            fi.direct_io = self._direct_io(path)
            fi.keep_cache = 0
            if flags & os.O_TRUNC:
                self._truncate(self._overlay(self.handles[fi.fh][1], fd, path), 0)
            return 0

    def open(self, path, fi):
        with self.mutex:
            self._guard()
            fd = os.open(self._real(path), os.O_RDWR)
            fi.fh = self._open_handle(fd, fi.flags)
            fi.direct_io = self._direct_io(path)
            fi.keep_cache = 0
            if fi.flags & os.O_TRUNC:
                self._truncate(self._overlay(self.handles[fi.fh][1], fd, path), 0)
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            self._guard()
            fd, ino, _ = self.handles[fh.fh]
            ov = self.overlays.get(ino)
            if ov is None:
                return os.pread(fd, size, offset)
            end = min(offset + size, ov.size)
            out = bytearray()
            pos = offset
            while pos < end:
                pg, off = divmod(pos, PAGE)
                n = min(PAGE - off, end - pos)
                img = ov.dirty.get(pg)
                if img is None:
                    img = self._load(ov, fd, pg)
                out += img[off:off + n]
                pos += n
            return bytes(out)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self._guard()
            fd, ino, flags = self.handles[fh.fh]
            ov = self._overlay(ino, fd, path)
            pos, i = offset, 0
            while i < len(data):
                pg, off = divmod(pos, PAGE)
                n = min(PAGE - off, len(data) - i)
                img = ov.dirty.get(pg)
                if img is None:
                    img = ov.dirty[pg] = self._load(ov, fd, pg)
                img[off:off + n] = data[i:i + n]
                pos += n
                i += n
            ov.size = max(ov.size, offset + len(data))
            self.stats["write"] += 1
            if flags & _SYNC_FLAGS:
                self._sync(ino, fd, path, "osync")
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            self._guard()
            if fh is not None and fh.fh in self.handles:
                fd, ino, _ = self.handles[fh.fh]
                self._truncate(self._overlay(ino, fd, path), length)
                return 0
            fd = os.open(self._real(path), os.O_RDWR)
            try:
                self._truncate(self._overlay(os.fstat(fd).st_ino, fd, path), length)
            finally:
                os.close(fd)
            return 0

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self._guard()
            fd, ino, _ = self.handles[fh.fh]
            self._sync(ino, fd, path, "fdatasync" if datasync else "fsync")
            return 0

    def flush(self, path, fh):
        return 0  # close(2) is not durability

    def release(self, path, fh):
        with self.mutex:
            fd, ino, _ = self.handles.pop(fh.fh)
            try:
                still_open = any(h[1] == ino for h in self.handles.values())
                if os.fstat(fd).st_nlink == 0 and not still_open:
                    self.overlays.pop(ino, None)
            finally:
                os.close(fd)
            return 0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--ctl", required=True, help="Unix socket for cut/stats (outside the mount)")
    p.add_argument("--lie-fsync", action="store_true", help="fsync succeeds and persists nothing")
    args = p.parse_args(argv)
    fs = PowerCutFS(args.backing, lie_fsync=args.lie_fsync)
    fs.serve_control(os.path.abspath(args.ctl))
    fuse.FUSE(fs, os.path.abspath(args.mountpoint), foreground=True, raw_fi=True, fsname="pcfs")


if __name__ == "__main__":
    main()
