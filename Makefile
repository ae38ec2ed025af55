# `make demo` and `make test` work on a fresh machine: both first set up .venv/ (tools/setup_env.sh).
# FREESOLO_WHEELHOUSE names a folder of prebuilt wheels (mmcv 2.1.0 for torch 2.13 CPU); without one,
# mmcv is compiled from source once (~25 min on 2 cores). A ../shared/wheels folder is used when present.
SHELL := /bin/bash
PY := .venv/bin/python
FREESOLO_WHEELHOUSE ?= $(wildcard $(abspath ../shared/wheels))
export FREESOLO_WHEELHOUSE
DEMO_DIR ?= data/demo
WORK_DIR ?= work_dirs/demo

.PHONY: env demo demo-data test
env:
	bash tools/setup_env.sh

demo-data: env
	@if [ -f $(DEMO_DIR)/annotations/val.json ]; then echo "[demo] $(DEMO_DIR) exists"; \
	else $(PY) tools/make_demo_data.py --out $(DEMO_DIR); fi

# the main job: unlabeled images -> Free Masks -> FreeSOLO -> self-training -> masks, overlays, metrics
demo: demo-data
	$(PY) tools/freesolo_pipeline.py --images $(DEMO_DIR)/train --work-dir $(WORK_DIR) \
	    --val-images $(DEMO_DIR)/val --val-ann $(DEMO_DIR)/annotations/val.json

test: env
	$(PY) -m pytest tests -q
