"""Derived device tables kept across calls, like CuPy's cuFFT plan cache.

The sparse-sign "slots" kernel reads slot tables (which rows of A add into which rows of
Y, chunk by chunk) that depend only on the operator (seed, stream, shape) and the kernel's
geometry, never on A. An operator applied again (a fixed sketch in a training loop, a
solver re-sketching new right-hand sides) can keep them: at d = 4096 on 1e6 x 256 float32
their build is 9% of a call. One-off operators (fresh seeds every call) must not fill the
device, so a key's array is kept only from its second request on, and at most ``limit``
bytes are kept, least recently used dropped first.

Kept arrays are used only on the CUDA stream they were built on (the stream is part of the
key): dropping one returns its memory to CuPy's pool for that stream, where any reuse is
ordered after the kernels that read it. Callers bypass the cache while a stream captures a
CUDA graph or a launch trace records (a kept array dropped later would dangle in them).
"""
import collections
import os
import threading

__all__ = ["TableCache", "slot_tables"]


class TableCache:
    """Values (arrays, or objects holding them, with an ``nbytes``) that are pure functions
    of their keys, kept for keys requested more than once.

    Parameters
    ----------
    limit : int
        Bytes kept at most (0 keeps nothing); may be changed later through ``limit``.
    remember : int
        Keys seen once that are remembered (least recently seen forgotten first).
    """

    def __init__(self, limit, remember=256):
        self.limit = int(limit)
        self._remember = int(remember)
        self._kept = collections.OrderedDict()     # key -> array, least recently used first
        self._seen = collections.OrderedDict()     # key -> None: requested once, not kept
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._kept)

    @property
    def nbytes(self):
        """Bytes of the values kept."""
        with self._lock:
            return sum(a.nbytes for a in self._kept.values())

    def get(self, key):
        """The value kept for ``key``, or None (the request is noted: a second one lets
        ``offer`` keep the key's array)."""
        with self._lock:
            array = self._kept.get(key)
            if array is not None:
                self._kept.move_to_end(key)
                return array
            if key in self._seen:
                self._seen.move_to_end(key)
                self._seen[key] = True              # requested at least twice
            else:
                self._seen[key] = False
                while len(self._seen) > self._remember:
                    self._seen.popitem(last=False)
            return None

    def offer(self, key, array):
        """Keep ``array`` (a value just built for ``key``) if the key has been requested before and
        it fits in ``limit`` bytes after dropping the least recently used arrays; returns
        whether it was kept."""
        with self._lock:
            if not self._seen.get(key) or array.nbytes > self.limit:
                return False
            del self._seen[key]
            held = sum(a.nbytes for a in self._kept.values())
            while self._kept and held + array.nbytes > self.limit:
                held -= self._kept.popitem(last=False)[1].nbytes
            self._kept[key] = array
            return True

    def clear(self):
        """Drop every kept value and forget every key seen."""
        with self._lock:
            self._kept.clear()
            self._seen.clear()


#: Slot tables of the sparse-sign "slots" kernel (``_sparse._apply_slots``). Its limit,
#: 256 MiB unless SKETCHCORE_SLOT_CACHE_MB says otherwise (0 turns the cache off), holds
#: about three operators of d = 4096 on 1e6 rows (80 MiB each).
def _limit_from_env(name, default_mib):
    text = os.environ.get(name, str(default_mib))
    try:
        mib = float(text)
    except ValueError:
        mib = -1.0
    if not mib >= 0:
        raise ValueError(f"{name} must be a number of MiB >= 0, got {text!r}")
    return int(mib * 2 ** 20)


slot_tables = TableCache(_limit_from_env("SKETCHCORE_SLOT_CACHE_MB", 256))
