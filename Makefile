# The two commands of the quick start, and the chores around them.
#   make demo   set up .venv, export the default model to ONNX if needed, serve it and
#               pre-annotate samples/camvid (prints where the results went)
#   make test   the whole test suite (what CI runs)

VENV     ?= .venv
PYTHON   ?= python3
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.prelabel-installed
DEFAULT  := models/camvid

.PHONY: demo test serve bench stubs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# export.py too: a checkout whose ONNX files an older export wrote gets them written again.
$(DEFAULT)/model.onnx: $(DEFAULT)/model.safetensors $(DEFAULT)/card.json models/prelabel_models/export.py | $(STAMP)
	$(BIN)/prelabel export $(DEFAULT)

demo: $(STAMP) $(DEFAULT)/model.onnx
	$(BIN)/prelabel demo --out demo-output

test: $(STAMP) $(DEFAULT)/model.onnx
	$(BIN)/python -m pytest

serve: $(STAMP) $(DEFAULT)/model.onnx
	$(BIN)/prelabel serve

stubs: $(STAMP)
	$(BIN)/python protos/generate_stubs.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache $(DEFAULT)/model.onnx $(DEFAULT)/model.trunk.onnx $(DEFAULT)/model.head.onnx
