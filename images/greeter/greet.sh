#!/bin/sh
# Prints the greeting baked in at build time and the machine it runs on.
echo "$(cat /etc/greeting) from $(uname -m)"
