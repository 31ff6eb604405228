#!/usr/bin/env bash
# kubeinfer serving the benchmark mlp (harness start command; PORT from the URL).
exec "$(dirname "$0")/serve.sh" mlp
