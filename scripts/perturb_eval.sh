#!/usr/bin/env bash
# The held-out figures of the classifiers through each perturbation of `evaluate --perturb` (the clean figures are
# the package's own evaluation). Usage: scripts/perturb_eval.sh PACKAGE OUT   (PACKAGE: one with a head per task,
# e.g. models/classifiers; writes OUT/<perturbation>/<task>/). Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
data="--ham ../shared/data/ham10000 --split models/ham10000_split.csv --isic2017 ../shared/data/isic2017
  --clinical ../shared/data/clinical"
for perturb in camera phone_look; do
  python -m skin_demo.train evaluate "$1" $data --threads 2 --perturb $perturb --out "$2/$perturb"
done
