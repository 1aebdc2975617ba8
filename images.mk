# archfarm images targets: gVisor's tools/images.mk target names and meaning, over the
# archfarm binary. Printed by `archfarm makefile`; adopt it with
#
#     archfarm makefile > images.mk      # and in your Makefile:  include images.mk
#
# archfarm's own top-level Makefile includes this very file.
#
# Make computes nothing here: no hashing, no `docker images` and no $(shell) at all when
# a makefile is read. Every target is one call of the binary, which knows the images,
# their content keys, the memo, the registry and the local engine.
#
# <image> is a folder under images/ with / written as _ (base_busybox for
# images/base/busybox), or a group: every image under that folder (load-basic).
#
# Variables:
#   ARCH                   the architecture (default: the host); uname names and every
#                          alias of arch/: x86_64, amd64, aarch64, arm64, armv7l...
#   ARCHFARM               the binary (default: archfarm on PATH)
#   ARCHFARM_FLAGS         global flags for every call, e.g. -v or --registry HOST/NS
#   SKIP_IMAGE_LOAD=true   load-* pulls and builds nothing: fails unless the key is local
#   DOCKER_PUSH_AS_LATEST=true  push-* also tags the complete multi-arch image :latest

ARCHFARM ?= archfarm
ARCHFARM_FLAGS ?=
# A prerequisite of every target that makes $(ARCHFARM) (archfarm's own Makefile builds it).
ARCHFARM_DEP ?=

archfarm_run = $(ARCHFARM) $(ARCHFARM_FLAGS)
archfarm_platform = $(if $(strip $(ARCH)),--platform $(strip $(ARCH)))
archfarm_skip_load = $(if $(filter true,$(SKIP_IMAGE_LOAD)),--local-only)
archfarm_latest = $(if $(filter true,$(DOCKER_PUSH_AS_LATEST)),--latest)

##   list-all-images         the images available for ARCH, one per line (make names)
list-all-images: $(ARCHFARM_DEP)
	@$(archfarm_run) list --names --underscore $(archfarm_platform)

##   list-all-test-images    the same without the archfarm.yaml non_test_images
list-all-test-images: $(ARCHFARM_DEP)
	@$(archfarm_run) list --names --underscore --test-images $(archfarm_platform)

##   load-<image>            pull its key from the registry, else build it; then tag
##                           <local prefix>/<image>:<key> and :latest in the local engine
load-all-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) load --all-images $(archfarm_platform) $(archfarm_skip_load)
load-all-test-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) load --all-test-images $(archfarm_platform) $(archfarm_skip_load)
load-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) load $(archfarm_platform) $(archfarm_skip_load) -- $*

##   pull-<image>            the registry's image for its key becomes the local one
pull-all-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) pull --all-images $(archfarm_platform)
pull-all-test-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) pull --all-test-images $(archfarm_platform)
pull-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) pull $(archfarm_platform) -- $*

##   rebuild-<image>         build it locally even if the registry has it; then tag
##   build-<image>           the same (the name the gVisor images README uses)
rebuild-all-images build-all-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) rebuild --all-images $(archfarm_platform)
rebuild-all-test-images build-all-test-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) rebuild --all-test-images $(archfarm_platform)
rebuild-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) rebuild $(archfarm_platform) -- $*
build-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) rebuild $(archfarm_platform) -- $*

##   push-<image>            load it, then push its key (nothing if the registry has it);
##                           writes the multi-arch tag once every platform is there
push-all-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) push --all-images $(archfarm_platform) $(archfarm_latest)
push-all-test-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) push --all-test-images $(archfarm_platform) $(archfarm_latest)
push-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) push $(archfarm_platform) $(archfarm_latest) -- $*

##   tag-<image>             tag the image of its key, already local, as <image>:<key> and :latest
tag-all-images: $(ARCHFARM_DEP)
	@$(archfarm_run) tag --all-images $(archfarm_platform)
tag-all-test-images: $(ARCHFARM_DEP)
	@$(archfarm_run) tag --all-test-images $(archfarm_platform)
tag-%: $(ARCHFARM_DEP)
	@$(archfarm_run) tag $(archfarm_platform) -- $*

##   test-<image>            presubmit: its key is in the registry or it builds; never pushes
test-all-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) test --all-images $(archfarm_platform)
test-all-test-images: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) test --all-test-images $(archfarm_platform)
test-%: $(ARCHFARM_DEP) register-cross
	@$(archfarm_run) test $(archfarm_platform) -- $*

##   local-image-<image>     print <local prefix>/<image>:<key>
local-image-%: $(ARCHFARM_DEP)
	@$(archfarm_run) local-image $(archfarm_platform) -- $*

##   register-cross          QEMU binfmt handlers, when ARCH is foreign and none is registered
register-cross: $(ARCHFARM_DEP)
	@$(if $(strip $(ARCH)),$(if $(wildcard /proc/sys/fs/binfmt_misc/qemu-*),,case "$(strip $(ARCH))" in ("$$(uname -m)") ;; (*) $(archfarm_run) binfmt --install >&2 ;; esac))

.PHONY: list-all-images list-all-test-images register-cross
.PHONY: load-all-images load-all-test-images pull-all-images pull-all-test-images
.PHONY: rebuild-all-images rebuild-all-test-images build-all-images build-all-test-images
.PHONY: push-all-images push-all-test-images tag-all-images tag-all-test-images
.PHONY: test-all-images test-all-test-images
