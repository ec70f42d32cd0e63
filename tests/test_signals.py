"""SIGTERM/SIGHUP as Ctrl-C (cegeo._signals): a KeyboardInterrupt the interpreter swallowed is
raised again at the next training step."""

from __future__ import annotations

import gc

import pytest

from cegeo import _signals

# the swallowed KeyboardInterrupt is reported as unraisable: that is the case under test
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def swallowed():
    """A signal whose KeyboardInterrupt was raised where Python ignores exceptions (a __del__,
    as an import's module-lock callback during `cegeo train`'s first probe): lost before."""

    class Finaliser:
        def __del__(self):
            _signals.interrupt(15, None)

    Finaliser()  # __del__ runs at once: "Exception ignored in ...", and the code carries on
    gc.collect()
    yield
    _signals.uninstall([])


def test_a_swallowed_interrupt_is_raised_at_the_next_check(swallowed):
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        _signals.check_interrupt()
    _signals.uninstall([])  # the handlers given back: nothing pending any more
    _signals.check_interrupt()


def test_training_stops_at_the_next_step(swallowed):
    from cegeo.config import RunConfig, override
    from cegeo.train import Trainer

    config = override(
        RunConfig(),
        {"data.source": "gaussian", "data.imbalance": "step:R=2,rho=0.5", "runtime.threads": 1},
    )
    t = Trainer(config, progress=False)
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        t.run()
    assert not t.records  # stopped in the first epoch, before its probe


def test_the_ufm_stops_at_the_next_epoch(swallowed):
    from cegeo.ufm import UFMConfig, simulate

    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        simulate(UFMConfig("ce", {}, lam=1e-2, lr=0.5), [10, 1], d=4, epochs=1000)


def test_without_the_handler_nothing_is_pending():
    _signals.check_interrupt()  # cegeo used as a library: a no-op
