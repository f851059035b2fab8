set -x
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch, triton; print(torch.__version__, triton.__version__)"
start=$(date +%s)
timeout 200 python -m pytest -q -p no:cacheprovider -o addopts='' -n 16 tests/test_varlen.py -x > $OUT/gpu_varlen.log 2>&1; tail -3 $OUT/gpu_varlen.log
echo "tests $(( $(date +%s) - start )) s"
timeout 170 python -m benchmarks.bwd_explore --out $OUT --varlen --step12 2>&1 | tail -40
echo "varlen $(( $(date +%s) - start )) s"
timeout 220 python -m benchmarks.bwd_explore --out $OUT --step12 2>&1 | tail -30
echo "all $(( $(date +%s) - start )) s"
