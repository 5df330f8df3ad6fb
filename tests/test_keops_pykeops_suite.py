"""pykeops 2.3's own test suite, run on lazymat through the alias ``pykeops`` -> ``lazymat.keops``.

The test files are read from the installed pykeops (``site-packages/pykeops/test``), never
copied; :mod:`keops_alias` imports each under the alias and runs its tests, whose oracles
are their own (dense torch and numpy, and pykeops' numpy helpers, read from the installed
package too).

:data:`PASS_ON_PYKEOPS` records which of them pass on real pykeops on a CPU-only machine.
It was produced once by running the suite on pykeops itself (all of its compiles, about an
hour on two cores)::

    KEOPS_CACHE_FOLDER=.venv/keops-cache .venv/bin/python -m pytest -p no:cacheprovider -rA \\
        .venv/lib/python3.11/site-packages/pykeops/test

and reading the PASSED lines: every test there must pass on lazymat. The others skip on
pykeops for want of a GPU (``skipif`` marks), and skip here with the same reason.
"""

from __future__ import annotations

import pytest
from keops_alias import PeerTest, peer_tests, pykeops_dir, run_peer_test

#: the tests of pykeops 2.3's suite that pass on real pykeops, CPU only (see the module doc)
PASS_ON_PYKEOPS: frozenset[str] = frozenset()

TESTS = peer_tests()


def test_the_suite_is_found() -> None:
    if pykeops_dir() is None:
        pytest.skip("pykeops is not installed: its test suite is read from the installed package")
    assert len(TESTS) >= 70, f"pykeops' suite shrank to {len(TESTS)} tests: check the version"
    missing = PASS_ON_PYKEOPS - {t.id for t in TESTS}
    assert not missing, f"recorded tests no longer in pykeops' suite: {sorted(missing)}"


@pytest.mark.parametrize("test", TESTS, ids=[t.id for t in TESTS])
def test_pykeops_suite_on_lazymat(test: PeerTest) -> None:
    run_peer_test(test)
