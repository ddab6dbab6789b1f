"""The prune stage's units without a cluster: the dispatch rule (in flight per worker, least busy next, a dead
worker's units again on a fresh one, ordinary failures alone, every worker killed) and the registry of eval kinds."""

import pytest
from ray.exceptions import RayActorError

from ccs_ray.evals.datasets import KINDS
from ccs_ray.evals.dispatch import dispatch
from ccs_ray.evals.kinds import EVAL_KINDS
from ccs_ray.retry import RESTARTS_PER_ACTOR, ActorsKeepDying


class Workers:
    """Fake workers: a future is (worker, item); ``wait`` takes the oldest future unless ``prefer`` names a worker
    whose futures come first; a worker in ``dead`` raises RayActorError, an item in ``bad`` a ValueError; the
    worker named by ``die`` dies when its future number ``die_at`` (0-based, all workers) is read."""

    def __init__(self, bad=(), prefer=None, die=None, die_at=None):
        self.bad, self.prefer, self.die, self.die_at = set(bad), prefer, die, die_at
        self.started, self.killed, self.dead, self.reads = [], [], set(), 0
        self.calls = []  # (worker, item, items the worker holds with this one)
        self.held: dict[int, int] = {}

    def start(self):
        self.started.append(len(self.started))
        self.held[self.started[-1]] = 0
        return self.started[-1]

    def call(self, worker, item):
        self.held[worker] += 1
        self.calls.append((worker, item, self.held[worker]))
        return worker, item

    def wait(self, futures):
        return next((f for f in futures if f[0] == self.prefer), futures[0])

    def get(self, future):
        worker, item = future
        if self.reads == self.die_at:
            self.dead.add(self.die)
        self.reads += 1
        if worker in self.dead:
            raise RayActorError()
        self.held[worker] -= 1
        if item in self.bad:
            raise ValueError(f"bad item {item}")
        return item * 10

    def run(self, items, n_workers=2):
        results = {}

        def done(i, result):
            assert i not in results, "each item is done once"
            results[i] = result

        replaced = dispatch(items, self.start, self.call, done, n_workers, "test", wait=self.wait, get=self.get,
                            kill=self.killed.append)
        return results, replaced


def test_each_item_runs_once_with_at_most_two_in_flight_per_worker():
    w = Workers(bad={3})
    results, replaced = w.run(list(range(8)))
    assert replaced == 0 and w.started == [0, 1] and sorted(w.killed) == [0, 1]
    assert {i: r for i, r in results.items() if i != 3} == {i: 10 * i for i in range(8) if i != 3}
    assert isinstance(results[3], ValueError)  # fails alone, not retried
    assert sorted(item for _, item, _ in w.calls) == list(range(8))
    assert max(n for _, _, n in w.calls) == 2


def test_next_unit_goes_to_the_least_busy_worker_not_round_robin():
    w = Workers(prefer=1)  # worker 1 finishes first every time: worker 0 is slow
    results, _ = w.run(list(range(8)))
    assert results == {i: 10 * i for i in range(8)}
    assert [item for worker, item, _ in w.calls if worker == 0] == [0, 2]  # only what it was given at first
    assert [item for worker, item, _ in w.calls if worker == 1] == [1, 3, 4, 5, 6, 7]


def test_a_dead_workers_units_run_again_on_a_fresh_worker():
    w = Workers(die=0, die_at=2)  # after worker 0 finished item 0 and worker 1 item 1
    results, replaced = w.run(list(range(8)))
    assert results == {i: 10 * i for i in range(8)}  # no unit lost, none failed
    assert replaced == 1 and w.started == [0, 1, 2]
    assert [item for worker, item, _ in w.calls if worker == 0] == [0, 2, 4]
    assert [item for worker, item, _ in w.calls if worker == 2][:2] == [2, 4]  # held by the dead one, in order
    assert sorted(w.killed) == [0, 1, 2] and w.killed[0] == 0  # the dead one at once, the others at the end


def test_workers_that_keep_dying_stop_the_run_and_are_killed():
    w = Workers(die=None)
    w.dead = set(range(100))  # every worker dies
    with pytest.raises(ActorsKeepDying, match="test actors died 7 times"):
        w.run(list(range(4)))
    assert len(w.started) == 2 + 2 * RESTARTS_PER_ACTOR  # the replacements the budget allows
    assert sorted(w.killed) == w.started


def test_no_items_start_no_worker():
    w = Workers()
    assert w.run([]) == ({}, 0) and w.started == [] and w.killed == []


def test_one_eval_kind_per_dataset_kind_in_their_order():
    assert tuple(EVAL_KINDS) == KINDS and all(kind.name == name for name, kind in EVAL_KINDS.items())
