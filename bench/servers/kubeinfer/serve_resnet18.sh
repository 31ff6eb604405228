#!/usr/bin/env bash
# kubeinfer serving the benchmark resnet18 (harness start command; PORT from the URL).
exec "$(dirname "$0")/serve.sh" resnet18
