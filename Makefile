# Conveniences over the scripts the README gives; the scripts need nothing but bash.
.PHONY: demo test lint

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

lint:
	bash -c 'source scripts/common.sh && ruff check transforms expectations dags tests scripts && ruff format --check transforms expectations dags tests scripts'
