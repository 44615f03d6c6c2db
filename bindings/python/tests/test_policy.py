"""RestartPolicy, RestartMode, DEFAULT_POLICY and from_config."""

import pickle

import pytest

import devrig
from devrig import RestartMode, RestartPolicy


def test_defaults_match_the_contract():
    p = RestartPolicy()
    assert p.mode is RestartMode.ON_FAILURE
    assert p.max_restarts == 10
    assert p.startup_max_restarts == 3
    assert p.startup_grace == 2.0
    assert p.initial_delay == 0.5
    assert p.max_delay == 30.0
    assert p.reset_after == 60.0
    assert p.crash_loop_limit == 5
    assert p.crash_loop_window == 30.0
    assert p.startup_grace_ms == 2000 and p.crash_loop_window_ms == 30000
    assert devrig.DEFAULT_POLICY == p
    assert isinstance(p.startup_grace, float)


def test_restart_mode_values():
    assert [m.name for m in RestartMode] == ["ON_FAILURE", "ALWAYS", "NEVER"]
    assert int(RestartMode.ON_FAILURE) == 0
    assert int(RestartMode.ALWAYS) == 1
    assert int(RestartMode.NEVER) == 2


def test_constructor_keywords_and_seconds():
    p = RestartPolicy(
        mode=RestartMode.ALWAYS,
        max_restarts=5,
        startup_max_restarts=1,
        startup_grace=0.25,
        initial_delay=0.1,
        max_delay=2,
        reset_after=1.5,
        crash_loop_limit=0,
        crash_loop_window=10.0,
    )
    assert p.mode is RestartMode.ALWAYS
    assert (p.max_restarts, p.startup_max_restarts) == (5, 1)
    assert p.startup_grace_ms == 250 and p.startup_grace == 0.25
    assert p.initial_delay_ms == 100 and p.max_delay_ms == 2000
    assert p.reset_after_ms == 1500 and p.crash_loop_limit == 0
    assert p.crash_loop_window_ms == 10000


@pytest.mark.parametrize(
    "spelling,mode",
    [
        ("on-failure", RestartMode.ON_FAILURE),
        ("always", RestartMode.ALWAYS),
        ("never", RestartMode.NEVER),
        ("NEVER", RestartMode.NEVER),
        ("on_failure", RestartMode.ON_FAILURE),
        (RestartMode.NEVER, RestartMode.NEVER),
    ],
)
def test_mode_spellings(spelling, mode):
    assert RestartPolicy(mode=spelling).mode is mode


def test_refuses_nonsense_with_value_error_naming_it():
    with pytest.raises(ValueError, match="max_delay"):
        RestartPolicy(initial_delay=2.0, max_delay=1.0)
    with pytest.raises(ValueError, match="startup_grace"):
        RestartPolicy(startup_grace=-1)
    with pytest.raises(ValueError, match="initial_delay"):
        RestartPolicy(initial_delay=float("nan"))
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=2**40)
    with pytest.raises(ValueError, match="sometimes"):
        RestartPolicy(mode="sometimes")
    with pytest.raises(ValueError, match="7"):
        RestartPolicy(mode=7)
    with pytest.raises(ValueError, match="mode") as e:
        RestartPolicy(mode="always\udcff")
    assert type(e.value) is ValueError
    with pytest.raises(ValueError, match="mode"):
        RestartPolicy(mode=2**70)
    with pytest.raises(ValueError, match="mode"):
        devrig.DEFAULT_POLICY.replace(mode="\udcff")


def test_refuses_wrong_types_with_type_error():
    with pytest.raises(TypeError, match="max_restarts"):
        RestartPolicy(max_restarts="3")
    with pytest.raises(TypeError, match="max_restarts"):
        RestartPolicy(max_restarts=2.5)
    with pytest.raises(TypeError, match="startup_grace"):
        RestartPolicy(startup_grace="2s")
    with pytest.raises(TypeError, match="mode"):
        RestartPolicy(mode=1.5)


def test_from_config():
    p = RestartPolicy.from_config(
        {"policy": "always", "max_restarts": 5, "startup_grace_ms": 3000}
    )
    assert p.mode is RestartMode.ALWAYS
    assert p.max_restarts == 5
    assert p.startup_grace == 3.0
    # Unnamed keys keep their defaults.
    assert p.initial_delay == 0.5 and p.crash_loop_limit == 5
    full = {
        "policy": "never",
        "max_restarts": 1,
        "startup_max_restarts": 2,
        "startup_grace_ms": 10,
        "initial_delay_ms": 20,
        "max_delay_ms": 40,
        "reset_after_ms": 50,
        "crash_loop_limit": 6,
        "crash_loop_window_ms": 70,
    }
    q = RestartPolicy.from_config(full)
    assert q.to_config() == full
    assert RestartPolicy.from_config({}) == devrig.DEFAULT_POLICY
    assert RestartPolicy.from_config({"max_restarts": None}).max_restarts == 10


def test_from_config_takes_whatever_to_config_gives():
    huge = RestartPolicy(startup_grace=1e13, initial_delay=1e15, max_delay=1.8e16,
                         reset_after=1e16, crash_loop_window=1e16,
                         max_restarts=2**32 - 1, crash_loop_limit=2**32 - 1)
    assert RestartPolicy.from_config(huge.to_config()) == huge
    top = RestartPolicy.from_config({"initial_delay_ms": 2**64 - 1, "max_delay_ms": 2**64 - 1})
    assert top.max_delay_ms == 2**64 - 1
    assert RestartPolicy.from_config(top.to_config()) == top
    with pytest.raises(ValueError, match="max_delay_ms"):
        RestartPolicy.from_config({"max_delay_ms": 2**64})
    with pytest.raises(ValueError, match="max_delay_ms"):
        RestartPolicy.from_config({"max_delay_ms": float(2**64)})


def test_from_config_unknown_keys_are_named():
    with pytest.raises(ValueError) as e:
        RestartPolicy.from_config({"policy": "always", "max_restart": 3, "bogus": 1})
    assert "max_restart" in str(e.value) and "bogus" in str(e.value)


def test_from_config_bad_values():
    with pytest.raises(ValueError, match="initial_delay_ms"):
        RestartPolicy.from_config({"initial_delay_ms": 5000, "max_delay_ms": 100})
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy.from_config({"max_restarts": -2})
    with pytest.raises(TypeError):
        RestartPolicy.from_config({"startup_grace_ms": "3000"})
    with pytest.raises(ValueError, match="maybe"):
        RestartPolicy.from_config({"policy": "maybe"})
    with pytest.raises(ValueError, match="policy"):
        RestartPolicy.from_config({"policy": "\udcff"})
    with pytest.raises(ValueError, match="unknown") as e:
        RestartPolicy.from_config({"max\udcff": 1})
    assert type(e.value) is ValueError
    with pytest.raises(TypeError):
        RestartPolicy.from_config(["policy", "always"])


def test_value_semantics():
    a = RestartPolicy(max_restarts=3)
    b = RestartPolicy(max_restarts=3)
    assert a == b and hash(a) == hash(b)
    assert a != RestartPolicy()
    assert {a, b} == {a}
    assert pickle.loads(pickle.dumps(a)) == a
    c = a.replace(mode="never", startup_grace=0.5)
    assert c.mode is RestartMode.NEVER and c.startup_grace == 0.5 and c.max_restarts == 3
    assert a.mode is RestartMode.ON_FAILURE  # unchanged
    with pytest.raises(TypeError, match="nope"):
        a.replace(nope=1)
    with pytest.raises(AttributeError):
        a.max_restarts = 4  # frozen


def test_repr_is_readable_and_evaluable():
    r = repr(RestartPolicy(mode="always", initial_delay=0.25))
    assert r.startswith("RestartPolicy(mode=RestartMode.ALWAYS")
    assert "initial_delay=0.25" in r
    ns = {"RestartPolicy": RestartPolicy, "RestartMode": RestartMode}
    assert eval(r, ns) == RestartPolicy(mode="always", initial_delay=0.25)
