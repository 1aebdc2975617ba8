# Shared by benches/make.sh and benches/list-gvisor.sh; run from the folder above images/:
#   make -f gvisor-standin.mk REMOTE=<prefix> LOCAL=<prefix> list-all-images | load-<image>
# Models gVisor's tools/images.mk at make time (not its code): per make call, every
# image is hashed and `docker images` is asked which are loaded.
ARCH ?= $(shell uname -m)
ALL := $(subst /,_,$(patsubst images/%,%,$(shell find images/ -name Dockerfile -o -name Dockerfile.$(ARCH) | xargs -n 1 dirname | sort -u)))
hash = $(shell cd images && find $(subst _,/,$(1)) -type f | sort | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16)
LOADED := $(shell docker images --format '{{.Repository}}:{{.Tag}}')
$(foreach i,$(ALL),$(eval H_$(i) := $(call hash,$(i))))
remote_of = $(REMOTE)/$(subst _,/,$(1))_$(ARCH):$(H_$(1))
local_of = $(LOCAL)/$(subst _,/,$(1))
list-all-images:
	@for i in $(ALL); do echo $$i; done
tag-%:
	@docker tag $(call remote_of,$*) $(call local_of,$*):$(H_$*) && docker tag $(call local_of,$*):$(H_$*) $(call local_of,$*):latest
load-%:
	@$(if $(filter $(call remote_of,$*),$(LOADED)),docker tag $(call remote_of,$*) $(call local_of,$*):$(H_$*) && docker tag $(call local_of,$*):$(H_$*) $(call local_of,$*):latest,echo "would pull or build $*" >&2; exit 1)
