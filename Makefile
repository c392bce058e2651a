# The two commands of the README. Both install what they need first (scripts/setup).
.PHONY: serve test setup lint bench

setup:
	@scripts/setup

serve: setup
	.venv/bin/tokenwire serve

test: setup lint
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests
	.venv/bin/mypy src

bench: setup
	.venv/bin/python bench/relay.py
	.venv/bin/python bench/local.py
