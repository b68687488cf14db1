#!/usr/bin/env bash
# A finished three-domain fit run's packages made ready to ship: int8 copies (compact; a copy that loses more than
# compact allows is refused and the source package kept), the malignancy decision per image domain (decide), the
# held-out tests (evaluate), then the two packages as one with a head each (combine), the form models/ ships.
# Usage: scripts/finish_package.sh RUN OUT   (RUN holds packages/{lesion_type,malignancy}; writes OUT/lesion_type,
# OUT/malignancy and OUT/classifiers). Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
R=$1/packages
O=$2
data="--ham ../shared/data/ham10000 --split models/ham10000_split.csv --isic2017 ../shared/data/isic2017
  --clinical ../shared/data/clinical"
mkdir -p "$O"
rm -rf "$O/lesion_type" "$O/malignancy"
python -m skin_demo.train compact "$R/lesion_type" --out "$O/lesion_type" $data --threads 2 \
  || cp -r "$R/lesion_type" "$O/lesion_type"
python -m skin_demo.train compact "$R/malignancy" --out "$O/malignancy" --lesion-type "$O/lesion_type" $data \
  --threads 2 || cp -r "$R/malignancy" "$O/malignancy"
python -m skin_demo.train decide "$O/malignancy" --lesion-type "$O/lesion_type" $data --threads 2
python -m skin_demo.train evaluate "$O/lesion_type" $data --threads 2
python -m skin_demo.train evaluate "$O/malignancy" --lesion-type "$O/lesion_type" $data --threads 2
python -m skin_demo.train combine "$O/malignancy" "$O/lesion_type" --out "$O/classifiers"
