# archfarm's own Makefile: gVisor's images targets (images.mk: the very text
# `archfarm makefile` prints, included, not copied) over the archfarm binary built from
# this checkout. `make ARCHFARM=/path/to/archfarm ...` uses that binary and builds nothing.
#
#   make load-uname                  make ARCH=aarch64 load-base_busybox
#   make list-all-images             make push-all-images DOCKER_PUSH_AS_LATEST=true

ARCHFARM_ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
ARCHFARM ?= $(ARCHFARM_ROOT)/target/release/archfarm

help: ## the images targets
	@sed -n 's/^##//p' $(ARCHFARM_ROOT)/images.mk
.PHONY: help

ifeq ($(origin ARCHFARM),file)
# Rebuilt only when a source is newer than the binary: make compares mtimes, cargo is
# not even started when nothing changed.
ARCHFARM_DEP := $(ARCHFARM)
$(ARCHFARM): $(ARCHFARM_ROOT)/Cargo.toml $(ARCHFARM_ROOT)/Cargo.lock $(ARCHFARM_ROOT)/images.mk \
		$(wildcard $(ARCHFARM_ROOT)/src/*.rs $(ARCHFARM_ROOT)/src/*.yaml $(ARCHFARM_ROOT)/arch/*.yaml)
	cd $(ARCHFARM_ROOT) && cargo build --release --locked --bin archfarm >&2
	@touch $@
endif

include $(ARCHFARM_ROOT)/images.mk
