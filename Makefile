# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
# `make test PYTHON=python3.13` gets its own virtualenv (.venv-3.13) beside the default .venv.
ifeq ($(origin PYTHON),command line)
# pyenv runs python3.13 only when 3.13 is selected: PYENV_VERSION selects it for this look-up.
override PYTHON := $(shell PYENV_VERSION=$(patsubst python%,%,$(notdir $(PYTHON))) $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || echo $(PYTHON))
VENV ?= .venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
else
VENV ?= .venv
endif
BIN := $(VENV)/bin
MYSQL_URL ?= mysql://root@127.0.0.1:3306/network_analysis
DATABASE ?= sqlite
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test test-mysql test-all lint bench load serve clean

$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt
	scripts/os-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

## demo: check the port, install, migrate SQLite, write the three hours of sample files that end
## now, process them, keep (or make) the demo user and its token, print a working curl, serve.
## `make demo PORT=8001` serves on another port; `make clean` starts again from nothing.
demo:
	@$(PYTHON) scripts/port_free.py $(HOST) $(PORT)
	@$(MAKE) --no-print-directory $(BIN)/.installed
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/python manage.py generate_sample_data --end now --hours 3 --parts 2
	$(BIN)/python manage.py update_network_stats
	$(BIN)/python manage.py create_demo_user --host $(HOST) --port $(PORT)
	$(BIN)/python manage.py runserver $(HOST):$(PORT) --noreload

## test: the whole suite on SQLite
test: $(BIN)/.installed
	scripts/os-packages.sh browser
	scripts/os-packages.sh promtool
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-mysql: the same suite on MariaDB/MySQL (MYSQL_URL)
test-mysql: $(BIN)/.installed
	scripts/os-packages.sh browser
	scripts/os-packages.sh promtool
	DATABASE_URL=$(MYSQL_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: test test-mysql

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run

## bench: the update command against DuckDB and Polars (BENCH_BIG=1: and a 5 GB file), then the
## scale hour (12 x 5 M rows) and a 10 M-row file (BENCH_SCALE=0.02 for a small model;
## BENCH_DATABASES=sqlite: no MariaDB; BENCH_REFERENCES=duckdb: no Polars; BENCH_DASK=1: and on
## 2 Dask workers; BENCH_REPEAT_BIG=2; BENCH_SCALE_ARGS=--help for the rest)
bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/scale.py --mysql-url $(MYSQL_URL) $(BENCH_SCALE_ARGS)

## load: a year of rows served by gunicorn under wrk while update_network_stats runs (loopback);
## DATABASE=mysql runs it on MariaDB/MySQL (a throwaway <MYSQL_URL name>_load database)
load: $(BIN)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q wrk >/dev/null; } || { echo "install wrk: sudo apt-get install wrk"; exit 1; }
	$(BIN)/python bench/load.py --database $(DATABASE) --mysql-url $(MYSQL_URL)

## clean: remove the virtualenv, the demo's database, data (input files, generated secrets) and
## collected static files
clean:
	rm -rf $(VENV) data db.sqlite3* staticfiles
