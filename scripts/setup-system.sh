#!/usr/bin/env bash
# What the whole test suite (`make test`) needs outside the virtualenv, checked and set up before
# pytest starts. Idempotent: when everything is there it changes nothing and apt-get never runs.
#
#   git and a git identity   DVC experiments commit in the temporary repositories the tests create
#   chromium, chromedriver   tests/test_report_browser.py (Debian: chromium chromium-driver), unless
#                            CNNBENCH_CHROMIUM / CNNBENCH_CHROMEDRIVER name them, as the test reads them
#   SLURM and munge          tests/test_cluster.py's single-node cluster, scripts/slurm-local.sh
#                            (Debian: slurm-wlm munge)
#
# As root with apt-get it installs the missing Debian packages, without their recommends (Chromium's
# are udev, upower, mesa, fonts and printing tools; slurm's the extra plugins; the tests need none).
# Otherwise it prints the one command that installs them and exits 1, before any test runs. A
# missing git identity is set in the user's global git config, as `git config --global` would.
set -euo pipefail

say() { echo "setup-system: $*"; }

missing_pkgs=()
need_pkg() { [[ " ${missing_pkgs[*]-} " == *" $1 "* ]] || missing_pkgs+=("$1"); }
problems=()

# Command -> Debian package; the commands are the ones the tests and slurm-local.sh look up on PATH.
check() {
  command -v git >/dev/null || need_pkg git
  if [[ -n ${CNNBENCH_CHROMIUM:-} ]]; then
    command -v "$CNNBENCH_CHROMIUM" >/dev/null || problems+=("CNNBENCH_CHROMIUM=$CNNBENCH_CHROMIUM is not an executable")
  elif ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
       && ! command -v google-chrome >/dev/null && ! command -v google-chrome-stable >/dev/null; then
    need_pkg chromium
  fi
  if [[ -n ${CNNBENCH_CHROMEDRIVER:-} ]]; then
    command -v "$CNNBENCH_CHROMEDRIVER" >/dev/null || problems+=("CNNBENCH_CHROMEDRIVER=$CNNBENCH_CHROMEDRIVER is not an executable")
  else
    command -v chromedriver >/dev/null || need_pkg chromium-driver
  fi
  local cmd
  for cmd in slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
    command -v "$cmd" >/dev/null || need_pkg slurm-wlm
  done
  for cmd in munged mungekey; do
    command -v "$cmd" >/dev/null || need_pkg munge
  done
}

check
if ((${#problems[@]})); then
  for p in "${problems[@]}"; do say "$p: point it at the program or unset it"; done
  exit 1
fi

if ((${#missing_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing_pkgs[*]} (apt-get)"
    start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
    say "installed in $((SECONDS - start)) s"
    installed=("${missing_pkgs[@]}")
    missing_pkgs=()
    check
    if ((${#missing_pkgs[@]})); then
      say "still missing after installing ${installed[*]}: the commands of ${missing_pkgs[*]} are not on PATH ($PATH)"
      exit 1
    fi
  elif command -v apt-get >/dev/null; then
    say "the test suite needs the Debian packages ${missing_pkgs[*]}; install them with:"
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
    say "then run 'make test' again (or 'make test-fast', which needs none of them)"
    exit 1
  else
    what=()
    for pkg in "${missing_pkgs[@]}"; do
      case $pkg in
        chromium) what+=("Chromium") ;;
        chromium-driver) what+=("its chromedriver") ;;
        slurm-wlm) what+=("SLURM (slurmctld, slurmd, sbatch, squeue, sinfo, scontrol, scancel)") ;;
        *) what+=("$pkg") ;;
      esac
    done
    joined=$(printf '%s; ' "${what[@]}")
    say "the test suite needs ${joined%; } on PATH, and without apt-get"
    say "this script cannot install them: use the system's package manager (or name a Chromium and its"
    say "chromedriver in CNNBENCH_CHROMIUM and CNNBENCH_CHROMEDRIVER), then run 'make test' again"
    say "('make test-fast' needs none of them)"
    exit 1
  fi
fi

# DVC commits experiments with the git identity of the user running the tests.
if ! git config --global --get user.email >/dev/null && ! git config --system --get user.email >/dev/null; then
  git config --global user.email "tests@cnnbench.invalid"
  say "set git config --global user.email tests@cnnbench.invalid (DVC experiments need an identity)"
fi
if ! git config --global --get user.name >/dev/null && ! git config --system --get user.name >/dev/null; then
  git config --global user.name "cnnbench tests"
  say "set git config --global user.name 'cnnbench tests' (DVC experiments need an identity)"
fi

say "git, Chromium + chromedriver, SLURM + munge: all there"
