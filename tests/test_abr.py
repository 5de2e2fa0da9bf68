"""ABR decisions: BBA reservoir/cushion/upper reservoir and harmonic-mean throughput rule."""
import pytest

from appliances.abr import BBA, AbrInput, ThroughputAbr, harmonic_mean, highest_at_most, make_abr

LADDER = (235, 750, 1750, 3000, 5800)


def choose(abr, buffer_s, tput=(), ladder=LADDER):
    return abr.choose(AbrInput(buffer_s=buffer_s, ladder_kbps=ladder, throughput_kbps=tput))


def test_bba_reservoir_gives_lowest_rung():
    bba = BBA()
    for b in (0.0, 2.5, 5.0):
        assert choose(bba, b) == 235


def test_bba_upper_reservoir_gives_highest_rung():
    bba = BBA()
    assert bba.upper_s == 15.0
    for b in (15.0, 20.0, 240.0):
        assert choose(bba, b) == 5800


def test_bba_cushion_is_linear_and_monotone():
    bba = BBA()
    # f(B) = 235 + (B - 5) / 10 * (5800 - 235)
    assert bba.rate_map_kbps(10.0, LADDER) == pytest.approx(235 + 0.5 * 5565)
    assert choose(bba, 10.0) == 3000  # f(10) = 3017.5: highest rung <= it
    picks = [choose(bba, 5 + 0.25 * i) for i in range(41)]
    assert picks == sorted(picks)
    assert set(picks) == set(LADDER)


def test_bba_cushion_exact_thresholds():
    bba = BBA()
    # the buffer level at which rung k becomes reachable: B = 5 + 10 * (k - 235) / 5565
    for k in LADDER[1:]:
        b = 5 + 10 * (k - 235) / 5565
        assert choose(bba, b + 1e-9) == k
        assert choose(bba, b - 1e-3) < k


def test_bba_ignores_throughput():
    bba = BBA()
    assert choose(bba, 3.0, tput=(100000.0,) * 5) == 235
    assert choose(bba, 16.0, tput=(10.0,) * 5) == 5800


def test_harmonic_mean():
    assert harmonic_mean([1000, 4000]) == pytest.approx(1600.0)
    assert harmonic_mean([500]) == 500
    assert harmonic_mean([0, 1000]) == 0.0
    with pytest.raises(ValueError):
        harmonic_mean([])


def test_tput_no_samples_gives_lowest():
    assert choose(ThroughputAbr(), 30.0) == 235


def test_tput_uses_harmonic_mean_of_last_five_with_safety():
    abr = ThroughputAbr(window=5, safety=0.9)
    # old huge samples are outside the window
    samples = (1e6, 1e6, 4000, 4000, 4000, 4000, 4000)
    assert abr.estimate_kbps(samples) == pytest.approx(3600.0)
    assert choose(abr, 0.0, samples) == 3000
    # harmonic mean is dragged down by one slow sample: HM(6000 x4, 1000) = 3000 -> 2700
    samples = (6000, 6000, 6000, 6000, 1000)
    assert abr.estimate_kbps(samples) == pytest.approx(0.9 * 5 / (4 / 6000 + 1 / 1000))
    assert choose(abr, 0.0, samples) == 1750


def test_tput_safety_factor_matters():
    samples = (3200.0,) * 5
    assert choose(ThroughputAbr(safety=1.0), 0.0, samples) == 3000
    assert choose(ThroughputAbr(safety=0.9), 0.0, samples) == 1750


def test_tput_below_lowest_rung_still_lowest():
    assert choose(ThroughputAbr(), 10.0, (50.0,) * 5) == 235


def test_highest_at_most():
    assert highest_at_most(LADDER, 0) == 235
    assert highest_at_most(LADDER, 750) == 750
    assert highest_at_most(LADDER, 1e9) == 5800


def test_bad_inputs_rejected():
    with pytest.raises(ValueError):
        AbrInput(buffer_s=1.0, ladder_kbps=())
    with pytest.raises(ValueError):
        AbrInput(buffer_s=1.0, ladder_kbps=(750, 235))
    with pytest.raises(ValueError):
        AbrInput(buffer_s=-1.0, ladder_kbps=LADDER)
    with pytest.raises(ValueError):
        BBA(cushion_s=0)
    with pytest.raises(ValueError):
        ThroughputAbr(safety=1.5)
    with pytest.raises(ValueError, match="unknown ABR"):
        make_abr("mpc")


def test_make_abr_names():
    assert make_abr("bba").name == "bba"
    assert make_abr("tput").name == "tput"


# --- location choice (fallback and re-probe), the player's other pure decision ---------------
from appliances.player_model import LocationCursor  # noqa: E402


def test_cursor_falls_back_in_rank_order_and_exhausts():
    c = LocationCursor(3, reprobe_segments=100, reprobe_s=1e9)
    assert c.pick(0.0) == 0
    c.failed(0, 0.0)
    assert c.pick(0.1) == 1
    c.failed(1, 0.2)
    assert c.pick(0.3) == 2
    c.failed(2, 0.4)
    assert c.exhausted
    with pytest.raises(IndexError):
        c.pick(0.5)


def test_cursor_reprobes_after_n_segments_and_recovers():
    c = LocationCursor(3, reprobe_segments=3, reprobe_s=1e9)
    c.failed(0, 0.0)
    for _ in range(2):
        assert c.pick(1.0) == 1
        c.succeeded(1)
    c.succeeded(1)
    assert c.pick(1.0) == 0          # third segment below the top: probe the best one
    c.failed(0, 1.0)                 # still down: stay on 1, restart the probe clock
    assert c.current == 1 and c.pick(1.1) == 1
    for _ in range(3):
        c.succeeded(1)
    assert c.pick(1.2) == 0
    c.succeeded(0)                   # recovered: back to the top
    assert c.current == 0 and c.pick(1.3) == 0


def test_cursor_reprobes_after_t_seconds():
    c = LocationCursor(2, reprobe_segments=1000, reprobe_s=10.0)
    c.failed(0, 100.0)
    assert c.pick(105.0) == 1
    assert c.pick(110.0) == 0
    assert not LocationCursor(2).reprobe_due(1e9)  # never probes while on the top location


def test_cursor_retries_a_location_before_falling_back_and_gets_them_back_on_success():
    c = LocationCursor(2, reprobe_segments=100, reprobe_s=1e9, retries=(2,))
    c.failed(0, 0.0)
    c.failed(0, 0.5)
    assert c.pick(1.0) == 0  # two retries of the anycast address
    c.succeeded(0)           # it worked: the retries are back
    c.failed(0, 2.0)
    c.failed(0, 2.5)
    assert c.pick(3.0) == 0
    c.failed(0, 3.0)         # third failure in a row: fall back
    assert c.pick(3.5) == 1
    c.failed(1, 4.0)         # no retries for the origin
    assert c.exhausted


def test_cursor_validates():
    with pytest.raises(ValueError):
        LocationCursor(0)
    with pytest.raises(ValueError):
        LocationCursor(2, reprobe_segments=0)
    with pytest.raises(ValueError):
        LocationCursor(1, retries=(1, 1))
    with pytest.raises(ValueError):
        LocationCursor(2, retries=(-1,))


# --- properties ------------------------------------------------------------------------------
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ladders = st.lists(st.integers(16, 100_000), min_size=1, max_size=10, unique=True).map(
    lambda xs: tuple(sorted(xs)))


@given(ladders, st.floats(0, 300), st.floats(0, 300))
def test_bba_returns_a_rung_and_is_monotone_in_buffer(ladder, b1, b2):
    bba = BBA()
    lo, hi = sorted((b1, b2))
    k_lo, k_hi = choose(bba, lo, ladder=ladder), choose(bba, hi, ladder=ladder)
    assert k_lo in ladder and k_hi in ladder and k_lo <= k_hi


@given(ladders, st.lists(st.floats(0, 1e6), max_size=12), st.floats(1, 1e6))
def test_tput_returns_a_rung_and_more_throughput_never_lowers_it(ladder, samples, boost):
    abr = ThroughputAbr()
    k = choose(abr, 1.0, tuple(samples), ladder)
    assert k in ladder
    if samples:
        more = tuple(s * (1 + boost) for s in samples)
        assert choose(abr, 1.0, more, ladder) >= k
        est = abr.estimate_kbps(samples)
        assert k == ladder[0] or k <= est


def test_fixed_abr_ignores_state():
    fixed = make_abr("fixed")
    assert fixed.name == "fixed"
    ladder = (235, 750, 1750, 3000, 5800)
    picks = {fixed.choose(AbrInput(buffer_s=b, ladder_kbps=ladder, throughput_kbps=t))
             for b in (0.0, 3.0, 40.0) for t in ((), (100.0,), (90000.0,))}
    assert picks == {1750}
    # a ladder without the default rung: highest rung below it, or the lowest
    assert fixed.choose(AbrInput(buffer_s=1.0, ladder_kbps=(500, 1000, 2000))) == 1000
    assert fixed.choose(AbrInput(buffer_s=1.0, ladder_kbps=(4000, 8000))) == 4000
