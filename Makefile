# herdwatch developer commands. Prerequisites: Python 3.11+, Java 17+, Maven, a C compiler (optional: the
# exec reader's C part; without one the agent reads exec events in Python). Everything else is
# installed by these targets into ./.venv and ./deploy/kafka/libs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JARS   := deploy/kafka/libs/.stamp

.DEFAULT_GOAL := help
.PHONY: help setup demo lab test pytest test-tools lint typecheck kafka-jars clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py collectors/probes/_execread.c
	$(PYTHON) -c 'import sys; sys.exit("herdwatch needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(JARS): deploy/kafka/pom.xml
	@command -v java >/dev/null || { echo "Java 17+ is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)"; exit 1; }
	mvn -B -q -f deploy/kafka/pom.xml package
	touch $@

kafka-jars: $(JARS)  ## fetch Apache Kafka's jars from Maven Central

setup: $(STAMP) $(JARS)  ## create .venv, install herdwatch and its tools, fetch Kafka

demo: setup  ## run a simulated clone fleet through Kafka, the workers and ClickHouse, then report
	$(BIN)/herdwatch demo

lab:  ## a real fleet of 8 namespaced hosts for ~10 min with attacks, then the report (root)
	@[ "$$(id -u)" = 0 ] || { echo "make lab needs root: it makes network, PID, mount and UTS namespaces," \
	  "veth pairs and a bridge (sudo make lab)"; exit 0; } && \
	$(MAKE) --no-print-directory setup && $(BIN)/herdwatch lab run --plan full

test: setup lint typecheck pytest  ## everything CI checks: lint, types, unit + integration tests

# Two processes share the tests file by file (each with its own broker and store); tests marked `alone`
# (timing-sensitive: the demo, millisecond process races) follow with nothing beside them.
pytest: setup test-tools  ## unit + integration tests (starts its own Kafka brokers)
	$(BIN)/pytest -n 2 --dist loadfile -m "not alone"
	$(BIN)/pytest -m alone

# kcat (Debian package) lets the tests prove that any Kafka client reads the anomaly topic, promtool (Debian
# package prometheus) checks deploy/prometheus/herdwatch-rules.yml; installed when this machine allows it,
# otherwise those tests skip and say why.
test-tools:
	@command -v kcat >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq kcat >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kcat >/dev/null 2>&1; }; }; } || \
	  echo "kcat is not installed; the kcat test will skip"
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq prometheus >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq prometheus >/dev/null 2>&1; }; }; } || \
	  echo "promtool (Debian package prometheus) is not installed; the alerting rules check will skip"

lint: setup  ## ruff
	$(BIN)/ruff check .

typecheck: setup  ## mypy
	$(BIN)/mypy

clean:  ## remove var/ (local Kafka data and the embedded ClickHouse store)
	-$(BIN)/herdwatch kafka stop
	rm -rf var
