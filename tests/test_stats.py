"""Each statistic of cnnbench.stats against an answer known independently of it.

Sources of the known answers are named at each test. Simulations are seeded, so every run of
this file sees the same numbers; the tolerances say what would be accepted under any seed.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from cnnbench import stats as S


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correct/wrong arrays of a and b with the given 2x2 table."""
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither)
    return a, b


# --------------------------------------------------------------------------------------------
# Holm


def test_holm_matches_r_multtest_reference():
    # R package multtest, mt.rawp2adjp(..., "Holm"): the reference values statsmodels' own test suite
    # checks against (statsmodels/stats/tests/test_multi.py, res_multtest1, columns rawp and Holm).
    raw = np.array([5.23656777208e-05, 2.8140506198e-04, 1.49877310796e-02, 2.02732688798e-02,
                    1.77096952723e-01, 6.42193923795e-01, 6.80845947633e-01, 7.1626938238e-01,
                    8.38541367553e-01, 9.67833824309e-01])
    r_holm = np.array([5.2365677720800005e-04, 2.5326455578199999e-03, 1.1990184863680001e-01,
                       1.4191288215860001e-01, 1, 1, 1, 1, 1, 1])
    shuffle = rng(3).permutation(raw.size)  # input order must not matter
    np.testing.assert_allclose(S.holm(raw[shuffle]), r_holm[shuffle], rtol=1e-12)


def test_holm_running_maximum_pingouin_example():
    # pingouin.holm documentation example: the adjusted value of .50 (1 x .50) is raised to .64,
    # the adjusted value of .32 (2 x .32): adjusted p-values never decrease along the sorted order.
    np.testing.assert_allclose(S.holm([.50, .003, .32, .054, .0003]), [0.64, 0.012, 0.64, 0.162, 0.0015], rtol=1e-12)


def test_holm_textbook_decisions():
    # The worked example of the Wikipedia article "Holm-Bonferroni method": four hypotheses with
    # p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05; Holm rejects H1 and H4 only (0.005 < 0.05/4,
    # 0.01 < 0.05/3, then 0.03 > 0.05/2 stops).
    adjusted = S.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert list(adjusted < 0.05) == [True, False, False, True]


def test_holm_edge_cases():
    # Untested claims (NaN) stay NaN and do not count in m: the others are adjusted over m = 2.
    np.testing.assert_allclose(S.holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    assert S.holm([]).shape == (0,) and np.isnan(S.holm([np.nan])).all()
    assert S.holm([0.2]).tolist() == [0.2]                    # one test: nothing to correct
    np.testing.assert_allclose(S.holm([0.01, 0.01, 0.01]), [0.03, 0.03, 0.03])  # ties share a value
    raw = rng(1).uniform(size=30)
    adjusted = S.holm(raw)
    assert np.all(adjusted >= raw) and np.all(adjusted <= np.minimum(1, 30 * raw) + 1e-15)  # between raw and Bonferroni
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.holm([0.5, 1.5])


# --------------------------------------------------------------------------------------------
# McNemar


def test_mcnemar_agresti_presidential_approval():
    # Agresti (1990), Categorical Data Analysis, p. 350: approval of the President in two surveys of
    # the same 1600 people; 794 approve both times, 150 approve then disapprove, 86 the reverse,
    # 570 disapprove both times. McNemar's statistic without continuity correction 17.36, p =
    # 3.099e-05 (Penn State STAT 504, "McNemar test in R - example presidential approval":
    # "McNemar's chi-squared = 17.3559, df = 1, p-value = 3.099e-05").
    first, second = pairs(794, 150, 86, 570)
    result = S.mcnemar(first, second)
    assert (result.a_only, result.b_only) == (150, 86)
    assert result.statistic == pytest.approx(17.3559, abs=5e-5)
    assert result.pvalue == pytest.approx(3.099e-05, rel=1e-3)
    statistic, p = result  # unpacks as (statistic, p)
    assert (statistic, p) == (result.statistic, result.pvalue)


def test_mcnemar_exact_small_table_fagerland():
    # Fagerland, Lydersen & Laake (2013), BMC Med. Res. Methodol. 13:91, Table 1 (Bentur et al.:
    # airway hyper-responsiveness before/after stem cell transplantation, 21 children): discordant
    # pairs 1 and 7. Exact conditional p = 0.070 (= 2 * 9/256); asymptotic McNemar p = 0.034.
    before, after = pairs(1, 1, 7, 12)
    exact = S.mcnemar(before, after)  # 8 discordant pairs < 25: exact by default
    assert "exact" in exact.method
    assert exact.pvalue == pytest.approx(18 / 256, rel=1e-12) and round(exact.pvalue, 3) == 0.070
    assert S.mcnemar(before, after, exact=False).pvalue == pytest.approx(0.034, abs=5e-4)


def test_mcnemar_edge_cases():
    same = np.array([1, 0, 1, 1, 0])
    assert tuple(S.mcnemar(same, same)) == (0.0, 1.0)  # no discordant image
    labels = rng(2).integers(0, 10, 200)
    one_class = (labels == 0).astype(int)  # a variant that predicts class 0 for every image
    result = S.mcnemar(one_class, (labels < 8).astype(int))
    assert result.pvalue < 1e-10 and result.b_only > 100
    a, b = pairs(0, 3, 3, 0)  # a tie of discordant counts
    assert S.mcnemar(a, b).pvalue == 1.0
    with pytest.raises(ValueError, match="same test images"):
        S.mcnemar([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="1 \\(correct\\) or 0"):
        S.mcnemar([1, 0.5], [1, 0])


# --------------------------------------------------------------------------------------------
# Paired bootstrap over images


def exact_sign_flip_p(d: np.ndarray) -> float:
    """The paired permutation test by complete enumeration of all 2^n sign patterns."""
    d = np.asarray(d, dtype=float)
    observed = abs(d.sum())
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d.size)))
    return float(np.mean(np.abs(signs @ d) >= observed - 1e-9))


def test_paired_bootstrap_p_is_the_exact_permutation_test_on_correct_wrong():
    a, b = pairs(6, 7, 2, 5)  # 20 images, 9 discordant
    result = S.paired_bootstrap_diff(a, b, rng(), 2000)
    assert result.diff == pytest.approx(5 / 20)
    assert result.p == pytest.approx(exact_sign_flip_p((a - b)[a != b]), abs=1e-12)  # 92/512
    assert result.p == pytest.approx(S.mcnemar(a, b, exact=True).pvalue, abs=1e-12)


def test_paired_bootstrap_p_on_real_scores_against_exact_enumeration():
    # Real-valued per-image differences (e.g. losses): 12 images, all 4096 sign patterns enumerated.
    d = np.array([0.9, -0.3, 1.4, 0.2, 0.0, 1.1, -0.6, 0.8, 0.5, -0.1, 1.7, 0.4])
    exact = exact_sign_flip_p(d)
    n_boot = 20_000
    result = S.paired_bootstrap_diff(d, np.zeros_like(d), rng(5), n_boot)
    monte_carlo_se = math.sqrt(exact * (1 - exact) / n_boot)
    assert abs(result.p - exact) <= 4 * monte_carlo_se + 1 / (n_boot + 1), (result.p, exact)


def test_paired_bootstrap_interval_against_the_exact_bootstrap_distribution():
    # The ideal bootstrap (infinitely many draws) of the mean difference over 20 images with 7 images
    # +1, 2 images -1 and 11 images 0: (K+ - K-)/20 with (K+, K-, K0) ~ Multinomial(20; .35, .10, .55),
    # enumerated with scipy.stats.multinomial. The Monte Carlo percentile interval must match its
    # 2.5 % and 97.5 % quantiles to within one step of the lattice (1/20).
    a, b = pairs(5, 7, 2, 6)
    law = {}
    for k_plus in range(21):
        for k_minus in range(21 - k_plus):
            value = (k_plus - k_minus) / 20
            law[value] = law.get(value, 0.0) + sps.multinomial.pmf([k_plus, k_minus, 20 - k_plus - k_minus], 20,
                                                                   [0.35, 0.10, 0.55])
    values = np.array(sorted(law))
    cdf = np.cumsum([law[v] for v in values])
    exact_low, exact_high = values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)]
    result = S.paired_bootstrap_diff(a, b, rng(7), 20_000)
    assert abs(result.ci_low - exact_low) <= 1 / 20 + 1e-12 and abs(result.ci_high - exact_high) <= 1 / 20 + 1e-12
    assert result.ci_low <= result.diff <= result.ci_high


def test_paired_bootstrap_edge_cases():
    same = np.array([1, 0, 1, 1])
    r = S.paired_bootstrap_diff(same, same, rng(), 500)
    assert (r.diff, r.ci_low, r.ci_high, r.p) == (0.0, 0.0, 0.0, 1.0)  # ties everywhere
    r = S.paired_bootstrap_diff([1], [0], rng(), 500)  # n = 1 image
    assert (r.diff, r.ci_low, r.ci_high, r.p) == (1.0, 1.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="Generator"):
        S.paired_bootstrap_diff(same, same, 0, 500)  # a seed is not a generator: no hidden global RNG
    with pytest.raises(TypeError, match="Generator"):
        S.paired_bootstrap_diff(same, same, np.random.RandomState(0), 500)
    with pytest.raises(ValueError, match="finite"):
        S.paired_bootstrap_diff([1, np.nan], [1, 0], rng(), 500)


# --------------------------------------------------------------------------------------------
# Two levels: seeds x test images


def simulated_study(gen: np.random.Generator, n_seeds: int, n_images: int, mu_a: float, mu_b: float,
                    sd_seed: float, image_share: float = 0.6, variant_share: float = 0.2):
    """Per-image correct/wrong of every run of a and b, with a known true difference mu_a - mu_b.

    Run r of variant v has population accuracy p_vr = mu_v + sd_seed * N(0, 1) (training noise).
    Image i is right for that run when L < Phi^-1(p_vr), L = sqrt(image_share) u_i +
    sqrt(variant_share) w_vi + sqrt(rest) e_vri, all standard normal: u_i is the image's difficulty
    shared by every run of both variants (the test set is one sample for all runs), w_vi what
    variant v finds hard, e_vri the run's own luck. A run's accuracy over the image population is
    p_vr, so the expected accuracy difference is mu_a - mu_b; the test set adds its own noise.
    """
    u = gen.standard_normal(n_images)
    sides = []
    for mu in (mu_a, mu_b):
        w = gen.standard_normal(n_images)
        p = np.clip(mu + sd_seed * gen.standard_normal(n_seeds), 0.01, 0.99)
        e = gen.standard_normal((n_seeds, n_images))
        latent = (math.sqrt(image_share) * u + math.sqrt(variant_share) * w
                  + math.sqrt(1 - image_share - variant_share) * e)
        sides.append(((latent < sps.norm.ppf(p)[:, None]).astype(np.int8), p))
    (runs_a, p_a), (runs_b, p_b) = sides
    return list(runs_a), list(runs_b), p_a, p_b


def coverage(n_studies: int, n_seeds: int, n_images: int, sd_seed: float, seed: int, n_boot: int = 400):
    gen = np.random.default_rng(seed)
    hits = boot_hits = 0
    for _ in range(n_studies):
        runs_a, runs_b, p_a, p_b = simulated_study(gen, n_seeds, n_images, 0.80, 0.78, sd_seed)
        truth = 0.02 if n_seeds > 1 else p_a[0] - p_b[0]  # one run per side: those two models' difference
        r = S.two_level_bootstrap(runs_a, runs_b, gen, n_boot)
        hits += r.ci_low <= truth <= r.ci_high
        boot_hits += r.boot_ci_low <= truth <= r.boot_ci_high
    return hits / n_studies, boot_hits / n_studies, r


# 400 studies: the binomial standard error of a 95 % coverage is 0.011; accept |coverage - 0.95| <= 0.03.
COVERAGE_TOLERANCE = 0.03


def test_coverage_three_seeds_training_noise_dominates():
    # Seed spread 1.5 points, 5000 paired test images: training noise dominates. The interval must
    # cover the true difference 95 % of the time; the plain two-level percentile bootstrap does not
    # (it cannot see past 3 runs per side), which is why it does not decide verdicts.
    covered, boot_covered, last = coverage(400, 3, 5000, 0.015, seed=11)
    assert last.noise == S.SEEDS_AND_IMAGES
    assert abs(covered - 0.95) <= COVERAGE_TOLERANCE, covered
    assert boot_covered < 0.95 - COVERAGE_TOLERANCE, boot_covered  # 0.87 here; 0.83 over 3000 studies


def test_coverage_three_seeds_test_set_noise_dominates():
    # Seed spread 0.3 points, 500 test images (the butterfly test set's size): the test set dominates.
    covered, _, _ = coverage(400, 3, 500, 0.003, seed=12)
    assert abs(covered - 0.95) <= COVERAGE_TOLERANCE, covered


def test_coverage_one_seed_per_side_test_set_level():
    # One run per side: the estimand is the difference between those two trained models over the
    # image population; only the test set's noise is in play, and the interval says so.
    covered, _, last = coverage(400, 1, 500, 0.01, seed=13)
    assert last.noise == S.IMAGES_ONLY and last.n_a == last.n_b == 1
    assert abs(covered - 0.95) <= COVERAGE_TOLERANCE, covered


def test_one_seed_per_side_reduces_to_the_paired_image_level():
    gen = np.random.default_rng(4)
    runs_a, runs_b, _, _ = simulated_study(gen, 1, 500, 0.80, 0.75, 0.01)
    result = S.two_level_bootstrap(runs_a, runs_b, rng(9), 2000)
    paired = S.paired_bootstrap_diff(runs_a[0], runs_b[0], rng(9), 2000)
    assert result.noise == S.IMAGES_ONLY and math.isnan(result.seed_var_a) and math.isinf(result.df)
    assert result.diff == pytest.approx(paired.diff, abs=1e-15)
    assert (result.ci_low, result.ci_high, result.p) == (paired.ci_low, paired.ci_high, paired.p)
    assert result.p == pytest.approx(S.mcnemar(runs_a[0], runs_b[0], exact=True).pvalue, abs=1e-12)
    assert result.prob_improvement in (0.0, 0.5, 1.0)  # one pair of runs


def test_probability_of_improvement_is_mann_whitney_over_runs():
    # P(a > b) over pairs of runs, ties 1/2, equals the Mann-Whitney U statistic / (n_a n_b)
    # (scipy.stats.mannwhitneyu), on the runs' accuracies over 10 images.
    def run(n_correct):
        return np.array([1] * n_correct + [0] * (10 - n_correct))
    a, b = [run(7), run(9), run(8)], [run(8), run(6), run(8)]
    result = S.two_level_bootstrap(a, b, rng(), 2000)
    u = sps.mannwhitneyu([0.7, 0.9, 0.8], [0.8, 0.6, 0.8]).statistic
    assert result.prob_improvement == pytest.approx(u / 9) == pytest.approx(6 / 9)
    assert 0 <= result.pi_low <= result.prob_improvement <= result.pi_high <= 1


def test_variance_components_and_welch_limit():
    # Runs whose images are independent of each other (no shared image effect): the test-set
    # component is the interaction alone, which the seed variances already hold, so it must come
    # out ~0 and the result must equal Welch's t test on the per-run accuracies (scipy).
    gen = np.random.default_rng(21)
    n_images = 20_000
    p_a, p_b = np.array([0.70, 0.78, 0.74]), np.array([0.66, 0.69, 0.61, 0.64])
    runs_a = [(gen.uniform(size=n_images) < p).astype(int) for p in p_a]
    runs_b = [(gen.uniform(size=n_images) < p).astype(int) for p in p_b]
    result = S.two_level_bootstrap(runs_a, runs_b, rng(), 1000)
    acc_a, acc_b = np.mean(runs_a, axis=1), np.mean(runs_b, axis=1)
    welch = sps.ttest_ind(acc_a, acc_b, equal_var=False)
    assert result.image_var < 1e-3 * result.se ** 2
    assert result.p == pytest.approx(welch.pvalue, rel=2e-3)
    assert result.df == pytest.approx(welch.df, rel=2e-3)
    ci = welch.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (pytest.approx(ci.low, rel=2e-3), pytest.approx(ci.high, rel=2e-3))
    # The reported numbers hang together: SE^2 = s_a^2/n_a + s_b^2/n_b + V_img, Satterthwaite df.
    va, vb = result.seed_var_a / 3, result.seed_var_b / 4
    assert result.se ** 2 == pytest.approx(va + vb + result.image_var, rel=1e-12)
    assert result.df == pytest.approx(result.se ** 4 / (va ** 2 / 2 + vb ** 2 / 3), rel=1e-12)


def test_two_level_edge_cases():
    ones, zeros = np.ones(50, int), np.zeros(50, int)
    same = S.two_level_bootstrap([ones, ones], [ones, ones], rng(), 500)  # ties, zero variance
    assert (same.diff, same.ci_low, same.ci_high, same.p, same.prob_improvement) == (0.0, 0.0, 0.0, 1.0, 0.5)
    apart = S.two_level_bootstrap([ones, ones], [zeros, zeros], rng(), 500)
    assert (apart.diff, apart.p, apart.prob_improvement, apart.pi_low) == (1.0, 0.0, 1.0, 1.0)
    # A variant that predicts one class for every image: about 10 % right on 10 balanced classes.
    labels = np.repeat(np.arange(10), 50)
    gen = np.random.default_rng(8)
    one_class = [(labels == 0).astype(int)] * 3
    learned = [(gen.uniform(size=labels.size) < 0.8).astype(int) for _ in range(3)]
    r = S.two_level_bootstrap(one_class, learned, rng(), 1000)
    assert r.diff == pytest.approx(0.1 - np.mean(learned), abs=1e-12) and r.p < 1e-6 and r.seed_var_a == 0.0
    assert r.prob_improvement == 0.0 and np.isfinite([r.ci_low, r.ci_high, r.se]).all()
    # One run on one side: its training noise is taken equal to the other side's, and said so.
    mixed = S.two_level_bootstrap(learned[:1], learned, rng(), 500)
    assert "side a has one run" in mixed.noise and mixed.df > 0 and np.isfinite(mixed.p)
    # A claim whose runs are missing: NaNs and the reason, not an exception.
    missing = S.two_level_bootstrap([], learned, rng(), 500)
    assert missing.noise == "no runs on side a" and math.isnan(missing.p) and missing.n_b == 3
    assert np.isnan(S.holm([missing.p, 0.01])[0])
    # Different test images (unpaired): allowed when said; refused when claimed paired.
    unpaired = S.two_level_bootstrap(learned, [ones[:40], zeros[:40] + 1], rng(), 500, paired_images=False)
    assert unpaired.n_images_b == 40 and not unpaired.paired and 0 <= unpaired.p <= 1
    with pytest.raises(ValueError, match="same test images"):
        S.two_level_bootstrap(learned, [ones[:40]], rng(), 500)
    with pytest.raises(ValueError, match="one array of per-image scores per run"):
        S.two_level_bootstrap(ones, learned, rng(), 500)


def test_reproducible_from_a_recorded_seed():
    gen = np.random.default_rng(2)
    runs_a, runs_b, _, _ = simulated_study(gen, 3, 2000, 0.80, 0.79, 0.005)
    first = S.two_level_bootstrap(runs_a, runs_b, S.rng_for(1234, "claim-x", "recipe-1"), 3000)
    again = S.two_level_bootstrap(runs_a, runs_b, S.rng_for(1234, "claim-x", "recipe-1"), 3000)
    assert first == again and repr(first) == repr(again)  # byte-identical when printed
    other = S.two_level_bootstrap(runs_a, runs_b, S.rng_for(1234, "claim-y", "recipe-1"), 3000)
    assert other.boot_ci_low != first.boot_ci_low and other.diff == first.diff
    # A claim's stream depends on its key only, not on which streams were made before it.
    assert S.rng_for(7, "b").random() == S.rng_for(7, "b").random() != S.rng_for(7, "a").random()


# --------------------------------------------------------------------------------------------
# "About the same" claims


def test_margin_tests_against_scipy_shifted_welch_tests():
    # TOST by shifting the samples by the margin and running scipy's one-sided Welch tests.
    gen = np.random.default_rng(6)
    a, b = gen.normal(75.3, 0.8, 4), gen.normal(75.0, 1.1, 5)
    margin = 2.0
    welch = sps.ttest_ind(a, b, equal_var=False)
    se = (a.mean() - b.mean()) / welch.statistic
    result = S.margin_tests(a.mean() - b.mean(), se, welch.df, margin)
    lower = sps.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
    upper = sps.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
    assert result.p_inside == pytest.approx(2 * max(lower, upper), rel=1e-10)
    ci = welch.confidence_interval(0.95)
    assert (result.p_inside < 0.05) == (-margin < ci.low and ci.high < margin)
    for m in (0.1, 0.3, 0.5, 1.0, 3.0):  # p < alpha exactly when the interval is inside / outside
        r = S.margin_tests(a.mean() - b.mean(), se, welch.df, m)
        assert (r.p_inside < 0.05) == (-m < ci.low and ci.high < m)
        assert (r.p_outside < 0.05) == (ci.low > m or ci.high < -m)


# --------------------------------------------------------------------------------------------
# Seeds needed


def test_seeds_needed_cohen_table():
    # Cohen (1988), Table 2.4.1: two-sample t test, two-sided alpha 0.05, power 0.80: n = 64 per
    # group for d = 0.5 and 26 for d = 0.8 (the exact noncentral-t values, as G*Power gives them).
    assert S.seeds_needed(0.5, 1.0, 1.0).n == 64
    assert S.seeds_needed(0.8, 1.0, 1.0).n == 26
    assert S.seeds_needed(1.6, 2.0, 2.0).n == 26  # only the standardised effect matters


def test_welch_power_equals_scipy_student_power_with_equal_spreads():
    # With equal sds and n, Welch's df is 2n - 2 and the power is Student's: 1 - F(tc) + F(-tc) for
    # T ~ nct(2n - 2, d sqrt(n/2)), computed here directly with scipy.stats.nct.
    for d, n in [(0.5, 10), (0.5, 64), (1.2, 4), (0.3, 150)]:
        df, nc = 2 * n - 2, d * math.sqrt(n / 2)
        tc = sps.t.isf(0.025, df)
        expected = sps.nct.sf(tc, df, nc) + sps.nct.cdf(-tc, df, nc)
        assert S.welch_power(d, 1.0, 1.0, n) == pytest.approx(expected, rel=1e-9)


def test_welch_power_against_simulated_welch_tests_on_normal_data():
    # Unequal spreads: the power at the recommended n, checked by running scipy's Welch test on
    # 4000 simulated studies of normal data (binomial standard error ~0.006; accept 3 of them).
    diff, sd_a, sd_b = 1.0, 1.0, 2.0
    plan = S.seeds_needed(diff, sd_a, sd_b)
    assert plan.power >= 0.8 > S.welch_power(diff, sd_a, sd_b, plan.n - 1)
    gen = np.random.default_rng(31)
    a = gen.normal(diff, sd_a, size=(4000, plan.n))
    b = gen.normal(0.0, sd_b, size=(4000, plan.n))
    simulated = np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)
    assert abs(simulated - plan.power) <= 3 * math.sqrt(plan.power * (1 - plan.power) / 4000), (simulated, plan)


def test_seeds_needed_edge_cases():
    assert S.seeds_needed(0.0, 1.0, 1.0).n is None                       # no effect
    assert S.seeds_needed(0.0, math.nan, math.nan).reason == S.UNMEASURED  # one run each: no effect seen, nothing known
    assert S.seeds_needed(0.5, math.nan, 1.0).reason == S.UNMEASURED     # one run: spread unmeasured
    # ... and with one run the test-set component still holds the run-by-image interaction, which more
    # seeds would average away: no "not reachable" from it either
    assert S.seeds_needed(0.01, math.nan, math.nan, image_var=1e-4).reason == S.UNMEASURED
    assert S.seeds_needed(0.5, 0.0, 0.0) == (2, 1.0, S.seeds_needed(0.5, 0.0, 0.0).reason)  # no noise at all
    hidden = S.seeds_needed(0.01, 0.01, 0.01, image_var=1e-4)           # the test set's noise alone hides it
    assert hidden.n is None and "test-set noise" in hidden.reason
    assert S.seeds_needed(0.01, 0.01, 0.01, image_var=1e-6).n > S.seeds_needed(0.01, 0.01, 0.01).n
    capped = S.seeds_needed(0.01, 1.0, 1.0, max_n=100)
    assert capped.n is None and "more than 100" in capped.reason
    strict = S.seeds_needed(0.5, 1.0, 1.0, alpha=0.05 / 34)              # Holm's first step over 34 tests
    assert strict.n > 64


def test_seeds_needed_similar_against_simulated_intervals():
    # "About the same": the share of simulated studies (normal data, scipy's Welch interval) whose
    # 95 % interval falls inside the margin at the recommended n: at least the planned power
    # (the two-one-sided approximation is a lower bound), and close to it.
    diff, sd, margin = 0.2, 1.0, 1.0
    plan = S.seeds_needed_similar(diff, sd, sd, margin)
    assert plan.n is not None and plan.power >= 0.8
    gen = np.random.default_rng(41)
    a = gen.normal(diff, sd, size=(4000, plan.n))
    b = gen.normal(0.0, sd, size=(4000, plan.n))
    ci = sps.ttest_ind(a, b, axis=1, equal_var=False).confidence_interval(0.95)
    inside = np.mean((ci.low > -margin) & (ci.high < margin))
    assert plan.power - 0.02 <= inside <= plan.power + 0.04, (inside, plan)
    assert S.seeds_needed_similar(1.0, sd, sd, margin).n is None          # |diff| >= margin: not reachable
    assert S.seeds_needed_similar(-1.5, sd, sd, margin).reason.startswith("not reachable")
    assert S.seeds_needed_similar(0.2, sd, sd, margin, image_var=0.5).n is None


def test_byte_identical_across_processes():
    # A rerun of aggregate is a new process (and a new PYTHONHASHSEED): the printed numbers must not change.
    import os
    import subprocess
    import sys
    script = ("import numpy as np; from cnnbench import stats as S; g = np.random.default_rng(5); "
              "a = [(g.uniform(size=300) < p).astype(int) for p in (.8, .82, .79)]; "
              "b = [(g.uniform(size=300) < p).astype(int) for p in (.75, .77)]; "
              "print(repr(S.two_level_bootstrap(a, b, S.rng_for(2026, 'claim', 'recipe'), 2000)))")
    src = str(Path(S.__file__).resolve().parents[1])  # this checkout's package, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True,
                              env={**env, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1 and "TwoLevelResult(" in outputs.pop()


# --------------------------------------------------------------------------------------------
# One value per run; one variant's mean accuracy


def test_welch_values_is_scipys_welch_test_with_mann_whitney_probability():
    a, b = np.array([3.1, 3.4, 2.9, 3.3]), np.array([2.5, 2.8, 2.6])
    r = S.welch_values(a, b, rng(), 2000)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r.p == pytest.approx(ref.pvalue) and r.df == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # P(a > b) = U / (n_a n_b), U the Mann-Whitney statistic of a (scipy)
    assert r.prob_improvement == pytest.approx(sps.mannwhitneyu(a, b).statistic / (a.size * b.size))
    assert r.pi_low <= r.prob_improvement <= r.pi_high


def test_welch_values_edge_cases():
    one = S.welch_values([1.0], [2.0, 2.1], rng(), 100)
    assert math.isnan(one.p) and one.diff == pytest.approx(-1.05) and one.prob_improvement == 0.0
    flat = S.welch_values([2.0, 2.0], [1.0, 1.0], rng(), 100)
    assert (flat.p, flat.ci_low, flat.ci_high) == (0.0, 1.0, 1.0)
    assert S.welch_values([2.0, 2.0], [2.0, 2.0], rng(), 100).p == 1.0
    assert "no values on side b" in S.welch_values([1.0, math.nan], [math.nan], rng(), 100).method
    many = S.welch_values(np.arange(300.0), np.arange(300.0) + 1, rng(), 500)  # blocks of bootstrap draws
    assert 0.4 < many.pi_low < many.prob_improvement < many.pi_high < 0.6


def test_accuracy_interval_one_run_is_the_normal_interval_of_a_proportion():
    correct = np.array([1] * 830 + [0] * 170)
    mean, low, high, noise = S.accuracy_interval([correct])
    half = sps.norm.isf(0.025) * math.sqrt(0.83 * 0.17 / 999)  # sample variance (ddof 1) over 1000 images
    assert (mean, low, high) == (pytest.approx(0.83), pytest.approx(0.83 - half), pytest.approx(0.83 + half))
    assert noise == S.IMAGES_ONLY


def test_accuracy_interval_without_image_noise_is_the_t_interval_of_the_runs():
    # each run is all right or all wrong on every image: the images carry no information of their own
    runs = np.array([[1] * 50, [0] * 50, [1] * 50, [1] * 50])
    mean, low, high, noise = S.accuracy_interval(runs)
    ref = sps.ttest_1samp(runs.mean(axis=1), 0).confidence_interval(0.95)
    assert (mean, low, high) == (0.75, pytest.approx(ref.low), pytest.approx(ref.high))
    assert noise == S.SEEDS_AND_IMAGES


def test_accuracy_interval_covers_the_population_accuracy():
    """Seeded simulation of 400 variants, each of 3 runs on its own test set of 2000 images drawn from
    one population: image difficulty d ~ N(0, 1.5), run shift s ~ N(0, 0.3), P(correct) = sigmoid(1.6 +
    s + d). The 95 % interval should cover the population's accuracy E[sigmoid(1.6 + s + d)]
    (Gauss-Hermite quadrature) in 95 % of them; tolerance 3 points (3.3 binomial SEs at n = 400)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    s_, d_ = np.meshgrid(0.3 * nodes, 1.5 * nodes, indexing="ij")
    population = float(np.sum(np.outer(weights, weights) / (1 + np.exp(-(1.6 + s_ + d_)))))
    g = rng(7)
    hits = 0
    for _ in range(400):
        difficulty = g.normal(0, 1.5, size=2000)
        runs = [g.random(2000) < 1 / (1 + np.exp(-(1.6 + g.normal(0, 0.3) + difficulty))) for _ in range(3)]
        _, low, high, _ = S.accuracy_interval(np.array(runs, dtype=float))
        hits += low <= population <= high
    assert 0.92 <= hits / 400 <= 0.98, hits


# --------------------------------------------------------------------------------------------
# Expected best of n tuning trials (Dodge et al. 2019)


def enumerated_max(values, n: int) -> tuple[float, float]:
    """Mean and standard deviation of max over every one of the N^n equally likely ordered draws."""
    maxima = np.array([max(t) for t in itertools.product(values, repeat=n)], dtype=float)
    return float(maxima.mean()), float(maxima.std())


@pytest.mark.parametrize("values", [[0.55, 0.61, 0.42], [0.3, 0.7, 0.7, 0.1], [0.5, 0.5, 0.5], [0.2, 0.9]])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_expected_max_equals_the_enumeration_of_every_draw(values, n):
    assert S.expected_max(values, n) == pytest.approx(enumerated_max(values, n)[0], abs=1e-12)


def test_expected_max_by_hand_and_at_the_ends():
    # N = 2, values 0 and 1, n = 2: of the 4 draws (0,0), (0,1), (1,0), (1,1) three have max 1
    assert S.expected_max([1.0, 0.0], 2) == pytest.approx(0.75)
    # N = 3 {1, 2, 3}, n = 2: max 1 once, 2 three times, 3 five times of 9 -> 22 / 9
    assert S.expected_max([3.0, 1.0, 2.0], 2) == pytest.approx(22 / 9)
    values = [0.2, 0.9, 0.4, 0.6]
    assert S.expected_max(values, 1) == pytest.approx(np.mean(values))  # one trial: the mean
    assert S.expected_max(values, 500) == pytest.approx(0.9, abs=1e-12)  # many: the best


def test_expected_max_ties_count_once_per_trial():
    # {0.5, 0.5, 1.0}, n = 2: max is 0.5 only when both draws are a 0.5: (2/3)^2
    assert S.expected_max([0.5, 1.0, 0.5], 2) == pytest.approx(0.5 * 4 / 9 + 1.0 * 5 / 9)


def test_expected_max_curve_mean_and_std_match_the_enumeration():
    values = [0.42, 0.61, 0.55, 0.61]
    curve = S.expected_max_curve(values)
    assert curve.n.tolist() == [1, 2, 3, 4]
    for n, mean, std in zip(curve.n, curve.mean, curve.std):
        want_mean, want_std = enumerated_max(values, int(n))
        assert mean == pytest.approx(want_mean, abs=1e-12) and std == pytest.approx(want_std, abs=1e-9)
    assert np.all(np.diff(curve.mean) >= 0)  # more trials never lower the expected best
    assert S.expected_max_curve([0.7]).std.tolist() == [0.0]


@pytest.mark.parametrize("values, n", [([], 1), ([0.5, float("nan")], 1), ([0.5], 0), ([0.5], 1.5)])
def test_expected_max_refuses_bad_input(values, n):
    with pytest.raises(ValueError, match="expected_max"):
        S.expected_max(values, n)
