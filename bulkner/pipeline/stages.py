"""Bounded queues between the stages of one shard, so that the engine never waits for CPU work.

A shard runs in three stages (``pipeline.shard.ShardSteps``): read, segment and build prompts (CPU)
→ generate (the engine) → parse, select and write (CPU). ``prefetch`` runs the first stage in a
background thread at most ``depth`` items ahead of the engine, ``Sink`` runs the last one in
another thread at most ``depth`` items behind it, and the engine generates in the caller's thread.
With ``depth`` 0 all three run one after another in the caller's thread (the unstaged design,
kept for measurement: ``bench/ray_pipeline.py``). An error in any stage stops the others and is
raised in the caller's thread.
"""

from __future__ import annotations

import threading
from queue import Empty, Full, Queue
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()
POLL_S = 0.1
"""How often a blocked stage looks whether the others stopped."""


class _Stage:
    """A bounded queue and the thread that works on it (none when ``depth`` is 0); entering the
    context starts the thread."""

    def __init__(self, work: Callable[[], None], depth: int, name: str) -> None:
        self.depth = depth
        self.queue: Queue = Queue(maxsize=max(depth, 1))
        self.thread = threading.Thread(target=work, name=name, daemon=True) if depth else None

    def __enter__(self):
        if self.thread is not None:
            self.thread.start()
        return self


class prefetch(_Stage, Generic[T]):
    """Iterates ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Use as a context manager: leaving it (also on an error) stops the thread. An exception raised
    while producing is raised by the iteration, in the consumer's thread.
    """

    def __init__(self, items: Iterable[T], depth: int, name: str = "prefetch") -> None:
        self.items = items
        self.stop = threading.Event()
        super().__init__(self._fill, depth, name)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join()

    def _fill(self) -> None:
        try:
            for item in self.items:
                if not self._put((True, item)):
                    return
            self._put((True, _END))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((False, err))

    def _put(self, entry) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=POLL_S)
                return True
            except Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        if self.thread is None:
            yield from self.items
            return
        while True:
            ok, item = self.queue.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item


class Sink(_Stage, Generic[T]):
    """Calls ``consume`` on each item ``put``, in a background thread, at most ``depth`` items
    behind the producer (``depth`` 0: at once, in the producer's thread).

    ``close`` waits for every item to be consumed and raises the first error of ``consume``; an
    error also makes the next ``put`` raise, so the producer stops early. ``abort`` drops what is
    still queued. Use as a context manager: a clean exit closes, an exception aborts.
    """

    def __init__(self, consume: Callable[[T], None], depth: int, name: str = "sink") -> None:
        self.consume = consume
        self.error: BaseException | None = None
        self.aborted = False
        super().__init__(self._drain, depth, name)

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _drain(self) -> None:
        while (item := self.queue.get()) is not _END:
            if self.error is None and not self.aborted:
                try:
                    self.consume(item)
                except BaseException as err:  # raised in the producer's thread by put/close
                    self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: T) -> None:
        if self.thread is None:
            self.consume(item)
            return
        while True:
            self._raise()
            try:
                self.queue.put(item, timeout=POLL_S)
                return
            except Full:
                continue

    def _finish(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.queue.put(_END)  # the drain thread always empties the queue, so this returns
            self.thread.join()

    def close(self) -> None:
        self._finish()
        self._raise()

    def abort(self) -> None:
        self.aborted = True
        try:
            while True:
                self.queue.get_nowait()
        except Empty:
            pass
        self._finish()
