"""Statistics for the study's verdicts: multiplicity correction, paired tests on the test images,
a two-level (seeds x test images) analysis of a difference in accuracy, seeds needed, and the
expected best validation score of n tuning trials (Dodge et al. 2019).

Pure functions on numpy arrays; nothing here reads files or params. Every random draw comes from
an explicit ``numpy.random.Generator`` (no global RNG), so a caller that records its seed gets
byte-identical numbers on a rerun (``rng_for`` derives one stream per claim from that seed).

The two sources of noise (Bouthillier et al. 2021)
---------------------------------------------------
A run's test accuracy varies with its training seed (initialisation, data order, augmentation)
*and* with which test images happened to be drawn. The test set is one sample shared by every
run: its noise does not average out over seeds. The data form a crossed design, runs x images
(McCullagh 2000; Owen 2007), and the variance of the difference of the seed-means is

    Var(diff) = s_a^2 / n_a + s_b^2 / n_b + V_img

``s^2`` is the variance of the per-run accuracies (measured on the fixed test set, so it already
holds the run-by-image interaction); ``V_img`` is the test-set component: the variance over
images of the per-image difference of the run-averaged correctness, divided by the number of
images, less the interaction that ``s^2`` already counts (the usual unbiased crossed-design
estimate, clipped at 0). With images paired (both variants scored on the same images) the
per-image difference removes what the images share. The interval and p-value of the difference
use this standard error with Welch-Satterthwaite degrees of freedom (the image component is
estimated from hundreds of images and counts as infinitely many; Satterthwaite 1946; Welch
1947). Why not the percentile interval of a two-level bootstrap that resamples seeds and then
images (rliable-style)? With 3 seeds per side (this study's default) no bootstrap over seeds can
reach 95 %: it never looks beyond the range of the 3 runs and ignores the t quantile of a
3-sample variance; and where the test set dominates it counts the run-by-image interaction more
than once (Owen 2007). ``tests/test_stats.py`` measures it on simulated studies with a known
difference: that interval covers it 83-87 % of the time when training noise dominates (and 96 %
when the test set does), the one here 95 % in both (94 % with 2 seeds per side, where Welch's
approximation is a little liberal). The two-level bootstrap is still drawn: it gives the
probability of improvement P(a > b) with its interval (Agarwal et al. 2021) and, for reference,
its own percentile interval.

With one training run per side nothing measures training noise; the verdict then comes from the
test set alone (paired: the exact sign-flip test, which for correct/wrong outcomes is McNemar's
exact test, and a paired bootstrap interval over images), and the result says so.

References
----------
- Agarwal, Schwarzer, Castro, Courville, Bellemare (2021). Deep reinforcement learning at the edge of
  the statistical precipice. NeurIPS. (rliable: bootstrap intervals, probability of improvement.)
- Bouthillier, Delaunay, Bronzi, et al. (2021). Accounting for variance in machine learning
  benchmarks. MLSys. (Sources of variance; data sampling is one of them.)
- Dror, Baumer, Shlomov, Reichart (2018). The hitchhiker's guide to testing statistical significance
  in natural language processing. ACL. (McNemar for paired binary outcomes; permutation/bootstrap.)
- Holm (1979). A simple sequentially rejective multiple test procedure. Scand. J. Statist. 6, 65-70.
- McNemar (1947). Psychometrika 12, 153-157. Dietterich (1998). Approximate statistical tests for
  comparing supervised classification learning algorithms. Neural Comput. 10, 1895-1923.
  Fagerland, Lydersen, Laake (2013). The McNemar test for binary matched-pairs data: mid-p and
  asymptotic are better than exact conditional. BMC Med. Res. Methodol. 13:91.
- Efron, Tibshirani (1993). An Introduction to the Bootstrap. Chapman & Hall. (Percentile interval,
  ch. 13; permutation and sign-flip tests, ch. 15.)
- Owen (2007). The pigeonhole bootstrap. Ann. Appl. Stat. 1, 386-411; McCullagh (2000). Resampling
  and exchangeable arrays. Bernoulli 6, 285-301. (Crossed random effects.)
- Satterthwaite (1946). Biometrics Bull. 2, 110-114; Welch (1947). Biometrika 34, 28-35.
- Schuirmann (1987). Two one-sided tests for equivalence. J. Pharmacokin. Biopharm. 15, 657-680.
- Dodge, Gururangan, Card, Schwartz, Smith (2019). Show your work: improved reporting of experimental
  results. EMNLP. (Expected validation performance as a function of the tuning budget.)
- Cohen (1988). Statistical Power Analysis for the Behavioral Sciences, 2nd ed. (Power tables.)
- Chow, Shao, Wang (2008). Sample Size Calculations in Clinical Research, 2nd ed. (Equivalence power.)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
EXACT_MCNEMAR_BELOW = 25  # discordant images; below this McNemar is exact (binomial): the usual rule of thumb
MAX_SEEDS = 1000          # seeds_needed searches up to this many per side
_CELLS = 4_000_000        # at most this many multinomial counts in memory at once

IMAGES_ONLY = "one training run per side: test-set noise only; training noise unmeasured"  # the label
SEEDS_AND_IMAGES = "seeds and test images"
UNMEASURED = "seed-to-seed spread unmeasured: needs at least 2 runs per side"


def rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator for one analysis (e.g. one claim and recipe), from the study's recorded ``seed``.

    The stream depends only on ``seed`` and ``key`` (hashed with SHA-256, not Python's salted
    ``hash``), so adding, removing or reordering other claims leaves this one's numbers unchanged.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    words = np.frombuffer(hashlib.sha256("\x1f".join(key).encode()).digest()[:16], dtype="<u4")
    return np.random.default_rng([int(seed), *(int(w) for w in words)])


# --------------------------------------------------------------------------------------------
# Multiplicity


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    Sorted ascending, p_(i) becomes max_{j <= i} min(1, (m - j + 1) p_(j)); a hypothesis is
    rejected at family-wise level alpha when its adjusted p < alpha (the same decisions as Holm's
    sequential procedure). NaN entries (claims that could not be tested, e.g. missing runs) stay
    NaN and do not count in m. Written out because scipy offers only false-discovery-rate
    procedures (``scipy.stats.false_discovery_control``: Benjamini-Hochberg/-Yekutieli), which do
    not bound the family-wise error.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm: pvalues must be one-dimensional, got shape {p.shape}")
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p[tested][(p[tested] < 0) | (p[tested] > 1)]}")
    out = np.full(p.shape, np.nan)
    m = int(tested.sum())
    if m == 0:
        return out
    index = np.flatnonzero(tested)
    order = index[np.argsort(p[index], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


# --------------------------------------------------------------------------------------------
# One run per side, the same test images


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test; unpacks as ``statistic, pvalue``."""

    statistic: float  # exact: images only a got right; asymptotic: (a_only - b_only)^2 / (a_only + b_only)
    pvalue: float     # two-sided
    a_only: int       # images a classified correctly and b did not
    b_only: int       # images b classified correctly and a did not
    method: str

    def __iter__(self):
        return iter((self.statistic, self.pvalue))


def mcnemar(correct_a, correct_b, *, exact: bool | None = None) -> McNemarResult:
    """McNemar's test of equal accuracy for two classifiers scored on the same images.

    Only the discordant images count: ``a_only`` (a right, b wrong) and ``b_only``. Under the null
    each discordant image is equally likely to go either way, so ``a_only ~ Binomial(a_only +
    b_only, 1/2)``: the exact test (``scipy.stats.binomtest``; Fagerland et al. 2013's "exact
    conditional" test). ``exact=None`` uses it when there are fewer than 25 discordant images and
    the chi-squared statistic without continuity correction otherwise (Agresti's form; Fagerland
    et al. find the continuity correction needlessly conservative). Recommended for one run per
    side by Dietterich (1998) and Dror et al. (2018).
    """
    a, b = _paired_binary(correct_a, correct_b, "mcnemar")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    if exact is None:
        exact = n < EXACT_MCNEMAR_BELOW
    if n == 0:
        return McNemarResult(0.0, 1.0, 0, 0, "no discordant images: both right or both wrong on each")
    if exact:
        p = stats.binomtest(a_only, n, 0.5).pvalue
        return McNemarResult(float(a_only), float(p), a_only, b_only,
                             f"McNemar exact (binomial, {n} discordant images)")
    statistic = (a_only - b_only) ** 2 / n
    return McNemarResult(float(statistic), float(stats.chi2.sf(statistic, 1)), a_only, b_only,
                         f"McNemar chi-squared, 1 df, no continuity correction ({n} discordant images)")


@dataclass(frozen=True)
class PairedDiff:
    """Difference mean(a) - mean(b) over the same images, with a paired bootstrap interval."""

    diff: float
    ci_low: float
    ci_high: float
    p: float          # two-sided, paired sign-flip (permutation) test
    n_images: int
    n_boot: int
    confidence: float
    method: str


def paired_bootstrap_diff(correct_a, correct_b, rng: np.random.Generator, n_boot: int = 10_000, *,
                          confidence: float = CONFIDENCE) -> PairedDiff:
    """Paired bootstrap over test images for one run per side (the same images, in the same order).

    ``correct_a``/``correct_b``: per-image scores (1/0 for correct/wrong, or any real score). The
    interval is the bootstrap percentile interval of the mean per-image difference (Efron &
    Tibshirani 1993, ch. 13), drawn as multinomial counts over the distinct per-image differences
    (the same distribution as resampling image indices, and fast: correct/wrong gives at most 3).

    The p-value is the paired sign-flip test (Efron & Tibshirani 1993, ch. 15; the approximate
    randomisation test of Dror et al. 2018): under the null, a and b are exchangeable on each image,
    so each per-image difference keeps its size and flips its sign with probability 1/2. When all
    non-zero differences have the same size (correct/wrong scores) it is computed exactly (the
    binomial test; McNemar's exact test), otherwise by ``n_boot`` random sign flips. The percentile
    bootstrap is not inverted into a p-value: with few discordant images it rejects too often
    (9 against 2 discordant images of 30: about 0.03, exact 0.065).
    """
    _check_rng(rng)
    _check_n_boot(n_boot)
    a, b = _paired_scores(correct_a, correct_b, "paired_bootstrap_diff")
    d = a - b
    n = d.size
    diff = float(d.mean())
    draws = _resampled_means(d, rng, n_boot)
    low, high = _percentile_interval(draws, confidence)
    p, how = _sign_flip_p(d, rng, n_boot)
    return PairedDiff(diff, low, high, p, n, n_boot, confidence,
                      f"paired bootstrap over {n} test images ({n_boot} draws, percentile interval); p: {how}")


# --------------------------------------------------------------------------------------------
# Several seeds per side: seeds x test images


@dataclass(frozen=True)
class Effect:
    """A difference a - b with its interval and two-sided p, and P(a > b) with its interval."""

    diff: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float
    prob_improvement: float
    pi_low: float
    pi_high: float


@dataclass(frozen=True)
class TwoLevelResult(Effect):
    """A difference in accuracy between two variants, counting seed and test-set noise.

    Units are those of the per-image scores (fractions for correct/wrong; multiply by 100 for
    percentage points). ``ci_*``/``p`` decide verdicts; ``prob_improvement`` is the probability
    that a random run of a scores higher than a random run of b (ties count 1/2), with its
    bootstrap interval ``pi_*``; ``boot_ci_*`` is the plain two-level percentile interval, for
    reference only (it under-covers with few seeds; see the module docstring).
    """

    boot_ci_low: float
    boot_ci_high: float
    seed_var_a: float   # variance of a's per-run accuracies (NaN with one run)
    seed_var_b: float
    image_var: float    # test-set component of Var(diff)
    n_a: int
    n_b: int
    n_images_a: int
    n_images_b: int
    paired: bool
    n_boot: int
    confidence: float
    noise: str          # which sources of noise the interval counts
    method: str


def _two_level_draws(runs_a: np.ndarray, runs_b: np.ndarray, rng: np.random.Generator, n_boot: int,
                     paired_images: bool) -> tuple[np.ndarray, np.ndarray]:
    """The two-level bootstrap draws, (n_boot, n_a) and (n_boot, n_b) run accuracies: the test images
    resampled once per draw (shared by both sides when paired), then the runs within each side."""
    n_a, n_b = runs_a.shape[0], runs_b.shape[0]
    if paired_images:
        star = _image_resampled_accuracies(np.vstack([runs_a, runs_b]), rng, n_boot)
        star_a, star_b = star[:, :n_a], star[:, n_a:]
    else:
        star_a = _image_resampled_accuracies(runs_a, rng, n_boot)
        star_b = _image_resampled_accuracies(runs_b, rng, n_boot)
    pick_a = np.take_along_axis(star_a, rng.integers(0, n_a, size=(n_boot, n_a)), axis=1)
    pick_b = np.take_along_axis(star_b, rng.integers(0, n_b, size=(n_boot, n_b)), axis=1)
    return pick_a, pick_b


def _seeds_and_images_se(seed_var_a: float, seed_var_b: float, n_a: int, n_b: int,
                         image_var: float) -> tuple[float, float, str]:
    """Standard error, Welch-Satterthwaite df and noise label of the difference of seed means, with
    the test-set variance component added (one run on one side: its training noise taken equal to
    the other side's)."""
    if n_a > 1 and n_b > 1:
        va, vb = seed_var_a / n_a, seed_var_b / n_b
        denominator = va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)
        noise = SEEDS_AND_IMAGES
    else:
        lone, other, s2, n_other = ("a", "b", seed_var_b, n_b) if n_a == 1 else ("b", "a", seed_var_a, n_a)
        va, vb = (s2, s2 / n_b) if n_a == 1 else (s2 / n_a, s2)
        denominator = (va + vb) ** 2 / (n_other - 1)
        noise = (f"seeds and test images; side {lone} has one run: its training noise is assumed equal to "
                 f"side {other}'s")
    se2 = va + vb + image_var
    df = se2 ** 2 / denominator if denominator > 0 else math.inf
    return math.sqrt(se2), df, noise


def two_level_bootstrap(correct_a: Sequence[np.ndarray] | np.ndarray, correct_b: Sequence[np.ndarray] | np.ndarray,
                        rng: np.random.Generator, n_boot: int = 10_000, *, paired_images: bool = True,
                        confidence: float = CONFIDENCE) -> TwoLevelResult:
    """Compare variants a and b from their runs' per-image scores, counting seeds and test images.

    ``correct_a``: one 1-D array per run (seed) of a, its per-image scores (1/0 correct/wrong); all
    of a side's runs were scored on the same test images. ``paired_images``: a and b were scored on
    the same images in the same order (the usual case: two variants of one data set), so image
    noise is shared and cancels in part.

    Bootstrap (``n_boot`` draws): each draw resamples the test images once (multinomial counts,
    the same draw for every run, and for both sides when paired: the test set is one sample
    shared by all runs), then resamples each side's runs with replacement (Owen 2007's
    pigeonhole bootstrap for crossed designs; rliable resamples runs the same way). From the
    draws: P(a > b) over pairs of runs and its percentile interval, and ``boot_ci_*``.

    Interval and p-value of the difference: the variance-components t described in the module
    docstring (Welch-Satterthwaite df; scipy.stats.t). With one run on one side its training
    noise is taken equal to the other side's (stated in ``noise``). With one run per side the
    analysis is the test-set level alone: paired, ``paired_bootstrap_diff`` (exact sign-flip p,
    paired percentile interval); unpaired, the percentile interval of independent image
    resamples and the p-value that inverts it. A side without runs gives NaNs (``noise`` says
    which side), not an error.
    """
    _check_rng(rng)
    _check_n_boot(n_boot)
    runs_a, runs_b = _runs(correct_a, "a"), _runs(correct_b, "b")
    n_a, n_b = runs_a.shape[0], runs_b.shape[0]
    if n_a == 0 or n_b == 0:
        return _no_runs(n_a, n_b, runs_a.shape[1], runs_b.shape[1], paired_images, n_boot, confidence)
    if paired_images and runs_a.shape[1] != runs_b.shape[1]:
        raise ValueError(f"two_level_bootstrap: paired_images=True needs the same test images on both sides, got "
                         f"{runs_a.shape[1]} images for a and {runs_b.shape[1]} for b")
    acc_a, acc_b = runs_a.mean(axis=1), runs_b.mean(axis=1)
    diff = float(acc_a.mean() - acc_b.mean())
    seed_var_a, seed_var_b = _seed_var(acc_a), _seed_var(acc_b)
    image_var = _image_variance(runs_a, runs_b, paired_images)

    one_each = n_a == 1 and n_b == 1
    paired_result = None
    if one_each and paired_images:  # the test-set level alone, paired: its own interval and exact p
        paired_result = paired_bootstrap_diff(runs_a[0], runs_b[0], rng, n_boot, confidence=confidence)

    pick_a, pick_b = _two_level_draws(runs_a, runs_b, rng, n_boot, paired_images)
    diff_star = pick_a.mean(axis=1) - pick_b.mean(axis=1)
    boot_low, boot_high = _percentile_interval(diff_star, confidence)
    prob = float(_prob_improvement(acc_a[None, :], acc_b[None, :])[0])
    pi_low, pi_high = _percentile_interval(_prob_improvement(pick_a, pick_b), confidence)

    if one_each:
        noise = IMAGES_ONLY
        se, df = math.sqrt(image_var), math.inf
        if paired_result is not None:
            low, high, p = paired_result.ci_low, paired_result.ci_high, paired_result.p
            how = f"test-set level, paired: {paired_result.method}"
        else:
            low, high, p = boot_low, boot_high, _percentile_p(diff_star)
            how = (f"test-set level, unpaired: percentile interval of {n_boot} independent image resamples, "
                   "p inverts it")
    else:
        se, df, noise = _seeds_and_images_se(seed_var_a, seed_var_b, n_a, n_b, image_var)
        low, high, p = t_interval(diff, se, df, confidence)
        how = ("difference of seed means; SE from seed variances (Welch) plus the test-set variance component, "
               f"Welch-Satterthwaite df = {df:.3g}; t interval and two-sided t test (scipy.stats.t)")
    images_how = "the same image draw for both sides" if paired_images else "images drawn per side"
    method = (f"{how}; P(a > b) over pairs of runs, two-level bootstrap ({n_boot} draws: test images, "
              f"{images_how}, then runs within each side; percentile interval)")
    return TwoLevelResult(diff, se, df, low, high, p, prob, pi_low, pi_high, boot_low, boot_high, seed_var_a,
                          seed_var_b, image_var, n_a, n_b, runs_a.shape[1], runs_b.shape[1], paired_images,
                          n_boot, confidence, noise, method)


# --------------------------------------------------------------------------------------------
# One value per run (seconds per epoch, instability): no test images involved


@dataclass(frozen=True)
class ValuesResult(Effect):
    """Welch's comparison of two samples of values (one per run, or one per epoch), with P(a > b)."""

    n_a: int
    n_b: int
    n_boot: int
    confidence: float
    method: str


def welch_values(a, b, rng: np.random.Generator, n_boot: int = 10_000, *,
                 confidence: float = CONFIDENCE) -> ValuesResult:
    """Difference of means of ``a`` and ``b`` with Welch's t interval and test (scipy.stats.ttest_ind,
    ``equal_var=False``), and the probability of improvement P(a > b) over pairs of values (ties
    count 1/2) with the percentile interval of a bootstrap that resamples each side (Agarwal et al.
    2021). NaN values are dropped. Fewer than 2 values on a side: no spread, so no interval and no
    p (NaN); equal values on both sides: the difference is exact (p 0, or 1 when it is 0).
    """
    _check_rng(rng)
    _check_n_boot(n_boot)
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    nan = math.nan
    if a.size == 0 or b.size == 0:
        missing = " and ".join(side for side, x in (("a", a), ("b", b)) if x.size == 0)
        return ValuesResult(nan, nan, nan, nan, nan, nan, nan, nan, nan, a.size, b.size, n_boot, confidence,
                            f"no values on side {missing}: not tested")
    diff = float(a.mean() - b.mean())
    prob = float(_prob_improvement(a[None, :], b[None, :])[0])
    if a.size < 2 or b.size < 2:
        return ValuesResult(diff, nan, nan, nan, nan, nan, prob, nan, nan, a.size, b.size, n_boot, confidence,
                            "fewer than 2 values on a side: no spread measured, not tested")
    pi_low, pi_high = _percentile_interval(_resampled_prob_improvement(a, b, rng, n_boot), confidence)
    var_a, var_b = _seed_var(a), _seed_var(b)
    if var_a == 0 and var_b == 0:
        return ValuesResult(diff, 0.0, math.inf, diff, diff, 0.0 if diff != 0 else 1.0, prob, pi_low, pi_high,
                            a.size, b.size, n_boot, confidence, "no spread on either side: the difference is exact")
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(confidence)
    se = math.sqrt(var_a / a.size + var_b / b.size)
    return ValuesResult(diff, se, float(test.df), float(ci.low), float(ci.high), float(test.pvalue), prob, pi_low,
                        pi_high, a.size, b.size, n_boot, confidence,
                        f"Welch's t test and interval (scipy.stats.ttest_ind, df = {float(test.df):.3g}); "
                        f"P(a > b) over pairs, bootstrap percentile interval ({n_boot} draws)")


def accuracy_interval(correct: Sequence[np.ndarray] | np.ndarray, *,
                      confidence: float = CONFIDENCE) -> tuple[float, float, float, str]:
    """Mean accuracy of one variant over its runs with its interval, counting seeds and test images.

    ``correct``: one 1-D array of per-image scores per run, all on the same images. The variance of
    the mean is s^2 / n (the runs' accuracies) plus the test-set component (the variance over images
    of the run-averaged score, over the number of images, less the run-by-image interaction), the
    one-sided version of ``two_level_bootstrap``'s; t interval with Welch-Satterthwaite df. With one
    run it is the normal interval of a proportion from the test set alone. Returns (mean, low, high,
    noise label).
    """
    runs = _runs(correct, "runs")
    if runs.shape[0] == 0:
        return math.nan, math.nan, math.nan, "no runs"
    n = runs.shape[0]
    acc = runs.mean(axis=1)
    seed_part = _seed_var(acc) / n if n > 1 else 0.0
    image_part = max(0.0, _raw_image_var(runs.mean(axis=0)) - _interaction(runs))
    se2 = seed_part + image_part
    df = se2 ** 2 / (seed_part ** 2 / (n - 1)) if seed_part > 0 else math.inf
    low, high, _ = t_interval(float(acc.mean()), math.sqrt(se2), df, confidence)
    return float(acc.mean()), low, high, (SEEDS_AND_IMAGES if n > 1 else IMAGES_ONLY)


# --------------------------------------------------------------------------------------------
# "About the same" claims


class MarginTests(NamedTuple):
    p_inside: float   # < alpha  <=>  the (1 - alpha) interval lies inside +-margin
    p_outside: float  # < alpha  <=>  the (1 - alpha) interval lies entirely outside +-margin


def margin_tests(diff: float, se: float, df: float, margin: float) -> MarginTests:
    """P-values for "a is about the same as b" (|difference| < ``margin``), for multiplicity control.

    ``p_inside`` is twice the two-one-sided-tests p-value (Schuirmann 1987): twice the larger of
    the one-sided p-values for difference > -margin and difference < +margin; ``p_outside`` is
    twice the one-sided p-value for |difference| > margin in the observed direction. Doubled so
    that each is below alpha exactly when the two-sided (1 - alpha) t interval ``diff +- t * se``
    lies inside (outside) the margin: the project's rule stated as p-values that Holm can adjust.
    """
    if margin <= 0:
        raise ValueError(f"margin_tests: margin must be positive, got {margin}")
    if any(math.isnan(x) for x in (diff, se, df)):
        return MarginTests(math.nan, math.nan)
    if se == 0:
        inside = abs(diff) < margin
        return MarginTests(0.0 if inside else 1.0, 0.0 if abs(diff) > margin else 1.0)
    lower = _t_sf((diff + margin) / se, df)  # H0: diff <= -margin
    upper = _t_sf((margin - diff) / se, df)  # H0: diff >= +margin
    outside = _t_sf((abs(diff) - margin) / se, df)
    return MarginTests(min(1.0, 2 * max(lower, upper)), min(1.0, 2 * outside))


# --------------------------------------------------------------------------------------------
# Seeds needed


class SeedPlan(NamedTuple):
    n: int | None  # seeds per side; None when no number up to max_n would do
    power: float   # at n (or at max_n, or in the limit, when n is None)
    reason: str


def welch_power(diff: float, sd_a: float, sd_b: float, n: int, alpha: float = 0.05, *,
                image_var: float = 0.0) -> float:
    """Power of the two-sided Welch t test at level ``alpha`` with ``n`` seeds per side.

    True difference ``diff``, per-seed standard deviations ``sd_a``/``sd_b`` and a test-set
    variance component ``image_var`` that more seeds do not shrink (the same test images score
    every run). The statistic is noncentral t (``scipy.stats.nct``) with noncentrality diff / SE
    and Welch-Satterthwaite df; with equal sds it is the exact power of Student's two-sample t.
    """
    if n < 2:
        raise ValueError(f"welch_power: needs n >= 2 seeds per side, got {n}")
    se2, df = _se2_df(sd_a, sd_b, n, image_var)
    if se2 == 0:
        return 1.0 if diff != 0 else alpha
    delta = abs(diff) / math.sqrt(se2)
    if math.isinf(df):
        z = stats.norm.isf(alpha / 2)
        return float(stats.norm.sf(z - delta) + stats.norm.cdf(-z - delta))
    tc = stats.t.isf(alpha / 2, df)
    return _nct_sf(tc, df, delta) + _nct_sf(tc, df, -delta)  # P(T > tc) + P(T < -tc)


def seeds_needed(diff: float, sd_a: float, sd_b: float, alpha: float = 0.05, power: float = 0.8, *,
                 image_var: float = 0.0, max_n: int = MAX_SEEDS) -> SeedPlan:
    """Smallest number of seeds per side at which the Welch test of ``diff`` has ``power``.

    Plug-in: the observed difference and spreads taken as true. ``alpha`` is the level the test
    will face: under Holm, the most demanding step is alpha / (number of tests), so pass that for
    a plan that holds whatever the other claims do. No effect (``diff == 0``), unmeasured spread
    (NaN sd: one run per side) or an effect the test-set noise alone hides (``image_var``: no
    number of seeds reaches ``power``) give ``n=None`` with the reason.
    """
    if math.isnan(diff) or math.isnan(image_var):
        return SeedPlan(None, math.nan, "not measured")
    if math.isnan(sd_a) or math.isnan(sd_b):  # one run: the image component still holds the run-by-image
        return SeedPlan(None, math.nan, UNMEASURED)  # interaction, which more seeds would average away
    if diff == 0:
        return SeedPlan(None, alpha, "no difference observed: no number of seeds reaches the power")
    if image_var > 0:
        z = stats.norm.isf(alpha / 2)
        delta = abs(diff) / math.sqrt(image_var)
        limit = float(stats.norm.sf(z - delta) + stats.norm.cdf(-z - delta))
        if limit < power:
            return SeedPlan(None, limit, f"not reachable: the test-set noise alone leaves power {limit:.2f} even with "
                                         "unlimited seeds (a larger test set would be needed)")
    return _search(lambda n: welch_power(diff, sd_a, sd_b, n, alpha, image_var=image_var), power, max_n,
                   f"Welch t test at alpha {alpha:g}, power {power:g}")


def equivalence_power(diff: float, sd_a: float, sd_b: float, n: int, margin: float, alpha: float = 0.05, *,
                      image_var: float = 0.0) -> float:
    """Probability that the (1 - alpha) Welch interval lies inside ±``margin`` with ``n`` seeds per side.

    The usual two-one-sided-tests approximation (e.g. Chow, Shao & Wang 2008, sec. 3.2): P(T1 >
    t) + P(T2 > t) - 1 with noncentral t variables for the two margins (``scipy.stats.nct``), a
    lower bound that is close when the power is high. Each side at alpha / 2, matching the
    two-sided interval of ``margin_tests``.
    """
    if n < 2:
        raise ValueError(f"equivalence_power: needs n >= 2 seeds per side, got {n}")
    se2, df = _se2_df(sd_a, sd_b, n, image_var)
    if se2 == 0:
        return 1.0 if abs(diff) < margin else 0.0
    se = math.sqrt(se2)
    if math.isinf(df):
        z = stats.norm.isf(alpha / 2)
        p1, p2 = stats.norm.sf(z - (margin + diff) / se), stats.norm.sf(z - (margin - diff) / se)
    else:
        tc = stats.t.isf(alpha / 2, df)
        p1, p2 = _nct_sf(tc, df, (margin + diff) / se), _nct_sf(tc, df, (margin - diff) / se)
    return float(max(0.0, p1 + p2 - 1))


def seeds_needed_similar(diff: float, sd_a: float, sd_b: float, margin: float, alpha: float = 0.05,
                         power: float = 0.8, *, image_var: float = 0.0, max_n: int = MAX_SEEDS) -> SeedPlan:
    """Smallest number of seeds per side at which the interval falls inside ±``margin`` with ``power``.

    For "about the same" claims, from the observed difference and spreads. Not reachable when
    |diff| >= margin (the interval is centred outside or on the edge) or when the test-set noise
    alone keeps the interval wider than the room left. ``power=0.5`` gives roughly the plug-in
    rule "the expected interval half-width fits between |diff| and the margin".
    """
    if margin <= 0:
        raise ValueError(f"seeds_needed_similar: margin must be positive, got {margin}")
    if math.isnan(diff) or math.isnan(image_var):
        return SeedPlan(None, math.nan, "not measured")
    if abs(diff) >= margin:
        return SeedPlan(None, 0.0, f"not reachable: the observed difference {diff:.3g} is not inside ±{margin:g}")
    if math.isnan(sd_a) or math.isnan(sd_b):  # see seeds_needed
        return SeedPlan(None, math.nan, UNMEASURED)
    if image_var > 0:
        z, se = stats.norm.isf(alpha / 2), math.sqrt(image_var)
        limit = max(0.0, float(stats.norm.sf(z - (margin + diff) / se) + stats.norm.sf(z - (margin - diff) / se) - 1))
        if limit < power:
            return SeedPlan(None, limit, f"not reachable: the test-set noise alone leaves power {limit:.2f} even with "
                                         "unlimited seeds (a larger test set would be needed)")
    return _search(lambda n: equivalence_power(diff, sd_a, sd_b, n, margin, alpha, image_var=image_var), power, max_n,
                   f"(1 - {alpha:g}) interval inside ±{margin:g} with probability {power:g}")


# --------------------------------------------------------------------------------------------
# Tuning budget (Dodge et al. 2019)


class BudgetCurve(NamedTuple):
    """Expected best validation score of n trials for n = 1..N, and its standard deviation."""

    n: np.ndarray     # 1..N
    mean: np.ndarray  # E[max of n trials]
    std: np.ndarray   # sqrt(Var[max of n trials])


def _max_weights(values, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The N scores sorted ascending and P(max of n i.i.d. draws is the i-th of them)."""
    v = np.sort(np.asarray(values, dtype=float).ravel())
    if v.size == 0 or np.isnan(v).any():
        raise ValueError(f"expected_max: need at least one score and no NaN, got {v.tolist()}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"expected_max: the number of trials n must be a positive integer, got {n!r}")
    cdf = np.arange(v.size + 1) / v.size
    return v, cdf[1:] ** n - cdf[:-1] ** n


def expected_max(values, n: int) -> float:
    """Expected best score of ``n`` trials drawn with replacement from the N trials' ``values``.

    Dodge, Gururangan, Card, Schwartz, Smith (2019), "Show Your Work", EMNLP, eq. 1: with the scores
    sorted ascending, E[max_n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n]. Tied scores need no special
    case: their weights add up to the probability that the maximum takes that value. ``n`` may exceed
    N (the draws are with replacement); the value then approaches max(values).
    """
    v, w = _max_weights(values, n)
    return float(np.dot(v, w))


def expected_max_curve(values) -> BudgetCurve:
    """:func:`expected_max` for n = 1..N and its standard deviation, sqrt(E[max^2] - E[max]^2)
    (the band Dodge et al. draw around the curve)."""
    size = _max_weights(values, 1)[0].size  # checks the scores once
    ns = np.arange(1, size + 1)
    means, stds = np.empty(size), np.empty(size)
    for k, n in enumerate(ns):
        v, w = _max_weights(values, int(n))
        means[k] = np.dot(v, w)
        stds[k] = math.sqrt(max(0.0, float(np.dot(v * v, w)) - means[k] ** 2))
    return BudgetCurve(ns, means, stds)


# --------------------------------------------------------------------------------------------
# Helpers


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def _check_n_boot(n_boot: int) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")


def _scores(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{what}: per-image scores must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: no test images")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: per-image scores must be finite (a missing prediction?)")
    return arr


def _paired_scores(a, b, where: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _scores(a, f"{where}: correct_a"), _scores(b, f"{where}: correct_b")
    if a.shape != b.shape:
        raise ValueError(f"{where}: paired sides need the same test images, got {a.size} and {b.size} images")
    return a, b


def _paired_binary(a, b, where: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _paired_scores(a, b, where)
    for side, arr in (("correct_a", a), ("correct_b", b)):
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{where}: {side} must hold 1 (correct) or 0 (wrong) per image")
    return a.astype(bool), b.astype(bool)


def _runs(runs, side: str) -> np.ndarray:
    """A side's runs as a (runs x images) float array; its runs share the test images."""
    if isinstance(runs, np.ndarray) and runs.ndim != 2:
        raise ValueError(f"side {side}: pass one array of per-image scores per run (a list, or a 2-D runs x images "
                         f"array), got an array of shape {runs.shape}")
    arrays = list(runs)
    if not arrays:
        return np.empty((0, 0))
    arrays = [_scores(r, f"side {side}, run {i}") for i, r in enumerate(arrays)]
    sizes = {r.size for r in arrays}
    if len(sizes) > 1:
        raise ValueError(f"side {side}: its runs were scored on different numbers of test images {sorted(sizes)}; "
                         "a side's runs must share one test set")
    return np.vstack(arrays)


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def _percentile_p(draws: np.ndarray) -> float:
    """Two-sided p that inverts the percentile interval: 0 lies outside the (1 - p) interval."""
    below, above = np.mean(draws <= 0), np.mean(draws >= 0)
    return float(min(1.0, 2 * min(below, above)))


def _categories(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group images (columns of a runs x images array) with identical scores across the runs.

    Returns the distinct columns (runs x K) and each image's category. Correct/wrong scores are
    packed into one integer per image, which is fast; real-valued scores are rarely repeated, so
    each image is its own category.
    """
    n_runs, n_images = columns.shape
    if n_runs <= 62 and np.all((columns == 0) | (columns == 1)):
        codes = (columns.astype(np.int64) << np.arange(n_runs, dtype=np.int64)[:, None]).sum(axis=0)
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        return columns[:, first], inverse.reshape(-1)
    return columns, np.arange(n_images)


def _image_draws(inverse: np.ndarray, n_categories: int, rng: np.random.Generator, n_boot: int):
    """Yield (start, counts) blocks: per bootstrap draw of the images, how many of each category.

    Resampling n images with replacement gives multinomial counts over the categories; drawn as
    such when there are few categories (cost per draw ~ categories), else by drawing image
    indices (cost ~ images). Either way the same distribution; which one depends only on the data.
    """
    n_images = inverse.size
    probs = np.bincount(inverse, minlength=n_categories) / n_images
    by_index = n_categories * 8 > n_images  # a multinomial category costs about 8 index draws
    width = n_images if by_index else n_categories
    block = max(1, min(n_boot, _CELLS // max(width, 1)))
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        if by_index:
            picked = inverse[rng.integers(0, n_images, size=(size, n_images))]
            picked += (np.arange(size) * n_categories)[:, None]
            counts = np.bincount(picked.reshape(-1), minlength=size * n_categories).reshape(size, n_categories)
        else:
            counts = rng.multinomial(n_images, probs, size=size)
        yield start, counts


def _resampled_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Bootstrap means of ``values`` (resampled with replacement)."""
    distinct, inverse = np.unique(values, return_inverse=True)
    out = np.empty(n_boot)
    for start, w in _image_draws(inverse.reshape(-1), distinct.size, rng, n_boot):
        out[start:start + len(w)] = (w @ distinct) / values.size
    return out


def _image_resampled_accuracies(runs: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot x runs) mean scores of every run on the same resampled test images per draw.

    Images with the same pattern of scores across the runs are interchangeable, so a draw only
    needs how many of each distinct pattern it holds (at most 2^runs for correct/wrong).
    """
    patterns, inverse = _categories(runs)
    out = np.empty((n_boot, runs.shape[0]))
    for start, w in _image_draws(inverse, patterns.shape[1], rng, n_boot):
        out[start:start + len(w)] = (w @ patterns.T) / runs.shape[1]
    return out


def _prob_improvement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the share of (run of a, run of b) pairs where a scores higher; ties count 1/2."""
    wins = (a[:, :, None] > b[:, None, :]).mean(axis=(1, 2))
    ties = (a[:, :, None] == b[:, None, :]).mean(axis=(1, 2))
    return wins + ties / 2


def _resampled_prob_improvement(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                                n_boot: int) -> np.ndarray:
    """P(a > b) on ``n_boot`` bootstrap resamples of each side, drawn in blocks that fit in memory."""
    out = np.empty(n_boot)
    block = max(1, min(n_boot, _CELLS // (a.size * b.size)))
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        pick_a = a[rng.integers(0, a.size, size=(size, a.size))]
        pick_b = b[rng.integers(0, b.size, size=(size, b.size))]
        out[start:start + size] = _prob_improvement(pick_a, pick_b)
    return out


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator, n_boot: int) -> tuple[float, str]:
    nonzero = np.abs(d[d != 0])
    if nonzero.size == 0:
        return 1.0, "exact sign-flip test (no image differs: p = 1)"
    positive = int(np.sum(d > 0))
    if np.all(nonzero == nonzero[0]):  # one size of difference: the number of positive signs is binomial
        return (float(stats.binomtest(positive, nonzero.size, 0.5).pvalue),
                f"exact sign-flip test = McNemar's exact test ({nonzero.size} discordant images)")
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, observed)
    hits = 0
    block = max(1, min(n_boot, _CELLS // nonzero.size))
    for start in range(0, n_boot, block):
        signs = rng.integers(0, 2, size=(min(block, n_boot - start), nonzero.size), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ nonzero) >= observed - tol))
    return (hits + 1) / (n_boot + 1), f"sign-flip test, {n_boot} random flips"


def _interaction(runs: np.ndarray) -> float:
    """The run-by-image interaction a side's seed variance already holds, per image mean."""
    n_runs, n_images = runs.shape
    if n_runs < 2:
        return 0.0  # not separable from the image effect with one run
    return float(runs.var(axis=0, ddof=1).mean()) / (n_runs * n_images)


def _raw_image_var(per_image: np.ndarray) -> float:
    """Variance over images of a per-image score, divided by the number of images."""
    return float(per_image.var(ddof=1)) / per_image.size if per_image.size > 1 else 0.0


def _image_variance(runs_a: np.ndarray, runs_b: np.ndarray, paired: bool) -> float:
    """The test-set component of Var(diff), less the run-by-image interaction the seed variances hold."""
    mean_a, mean_b = runs_a.mean(axis=0), runs_b.mean(axis=0)
    raw = _raw_image_var(mean_a - mean_b) if paired else _raw_image_var(mean_a) + _raw_image_var(mean_b)
    return max(0.0, raw - _interaction(runs_a) - _interaction(runs_b))


def _seed_var(acc: np.ndarray) -> float:
    """Sample variance of the per-run accuracies; exactly 0 when they are equal (no rounding residue)."""
    if acc.size < 2:
        return math.nan
    return 0.0 if np.all(acc == acc[0]) else float(acc.var(ddof=1))


def _t_sf(x: float, df: float) -> float:
    return float(stats.norm.sf(x) if math.isinf(df) else stats.t.sf(x, df))


def t_interval(diff: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """``diff`` ± t quantile x ``se`` (normal when df is infinite), and the two-sided p of diff = 0."""
    if se == 0:
        return diff, diff, (1.0 if diff == 0 else 0.0)
    q = float(stats.norm.isf((1 - confidence) / 2) if math.isinf(df) else stats.t.isf((1 - confidence) / 2, df))
    return diff - q * se, diff + q * se, min(1.0, 2 * _t_sf(abs(diff) / se, df))


def _nct_sf(x: float, df: float, nc: float) -> float:
    """P(T > x) for T noncentral t (scipy.stats.nct).

    scipy returns NaN for some arguments far in a tail (e.g. df 998, nc -17.9, x 1.96, where the
    answer is ~1e-70); there the probability is 0 or 1 to double precision, told by which side
    of x the noncentrality lies.
    """
    value = float(stats.nct.sf(x, df, nc))
    if math.isnan(value):
        value = 1.0 - float(stats.nct.cdf(x, df, nc))
    if math.isnan(value):
        value = 1.0 if nc > x else 0.0
    return value


def _se2_df(sd_a: float, sd_b: float, n: int, image_var: float) -> tuple[float, float]:
    va, vb = sd_a ** 2 / n, sd_b ** 2 / n
    se2 = va + vb + image_var
    denominator = (va ** 2 + vb ** 2) / (n - 1)
    return se2, (se2 ** 2 / denominator if denominator > 0 else math.inf)


def _search(power_at, target: float, max_n: int, what: str) -> SeedPlan:
    """Smallest n in [2, max_n] with power_at(n) >= target (power grows with n): bisection."""
    if max_n < 2:
        raise ValueError(f"max_n must be at least 2, got {max_n}")
    if power_at(2) >= target:
        return SeedPlan(2, power_at(2), what)
    top = power_at(max_n)
    if top < target:
        return SeedPlan(None, top, f"needs more than {max_n} seeds per side (power {top:.2f} at {max_n}); {what}")
    low, high = 2, max_n  # power_at(low) < target <= power_at(high)
    while high - low > 1:
        mid = (low + high) // 2
        if power_at(mid) >= target:
            high = mid
        else:
            low = mid
    return SeedPlan(high, power_at(high), what)


def _no_runs(n_a: int, n_b: int, images_a: int, images_b: int, paired: bool, n_boot: int,
             confidence: float) -> TwoLevelResult:
    missing = " and ".join(side for side, n in (("a", n_a), ("b", n_b)) if n == 0)
    nan = math.nan
    return TwoLevelResult(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, n_a, n_b,
                          images_a, images_b, paired, n_boot, confidence, f"no runs on side {missing}",
                          "not tested")
