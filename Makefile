# Every target creates the virtual environment on first use and installs into it.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint notebooks train sample bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make test: the whole test suite (kernels through the interpreter on a CPU-only machine), one
## worker process per core (pytest-xdist); JOBS=1 runs it in one process
JOBS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

## make notebooks: Jupyter Lab on the notebook series (ARGS go to jupyter lab, e.g. --no-browser);
## as root, the usual user in a container, Jupyter refuses to start without --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
notebooks: $(STAMP)
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(ARGS) notebooks/

## make train: train the mini Transformer (about 2 minutes on a 2-core CPU, under a minute on a GPU)
train: $(STAMP)
	$(BIN)/python -m minitransformer.train $(ARGS)

## make sample: generate text from the checkpoint of `make train`
sample: $(STAMP)
	$(BIN)/python -m minitransformer.sample --prompt "def " $(ARGS)

## make bench: on a CUDA GPU, the kernel against PyTorch's attention backends (with peak memory
## and FlexAttention), decoding, training memory, and linear against softmax attention
RESULTS ?= benchmarks/results/$(shell $(BIN)/python -c "import torch; print(torch.cuda.get_device_name().split()[1].lower() if torch.cuda.is_available() else 'cpu')" 2>/dev/null)
bench: $(STAMP)  # the attention sweep last: its table of ratios ends the output
	$(BIN)/python -m benchmarks.bench_decode --out $(RESULTS)
	$(BIN)/python -m benchmarks.train_memory --out $(RESULTS)
	$(BIN)/python -m benchmarks.bench_linear --out $(RESULTS)
	$(BIN)/python -m benchmarks.bench_attention --memory --out $(RESULTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
