# Needs only Python 3.11+ and make: uv (pinned) is installed into .uv/, the locked
# dependencies into .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint format install clean migration

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON) --quiet
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/tokenbot demo

test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# A new migration, storage/migrations/versions/NNNN_what_it_does.py: what the models hold
# that the migrations do not yet make, found by Alembic on a scratch SQLite database
# migrated to the newest revision. Read it, and adjust it, before committing it.
migration: install
	@test -n "$(m)" || { echo 'usage: make migration m="what it does"' >&2; exit 2; }
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	export TOKENBOT_DATABASE_URL="sqlite:///$$scratch/head.db" && \
	$(VENV)/bin/alembic upgrade head && \
	$(VENV)/bin/alembic revision --autogenerate -m "$(m)" \
		--rev-id "$$($(VENV)/bin/python -m storage.migrate next-id)"

clean:
	rm -rf .uv $(VENV) .pytest_cache .ruff_cache .mypy_cache
