//! Input that archfarm used to take silently or report wrongly, and failures it used to
//! blame on the wrong party (issue 11, points 6 to 9): each case runs the real binary
//! (with the real engine and registries where the case needs them) and checks the exit
//! code and that the message names the variable, flag, file, image or path concerned.

mod common;
use common::*;

/// Every numeric ARCHFARM_* tunable with a bad value stops the run with exit 2, naming
/// the variable and what it accepts (they used to fall back to their defaults in silence).
#[test]
fn bad_tunables_in_the_environment_are_refused_naming_the_variable() {
    let repo = Repo::bare("envvars");
    repo.write("images/a/Dockerfile", "FROM scratch\n");
    for (var, value, accepts) in [
        ("ARCHFARM_ENGINE_TIMEOUT", "abc", "seconds greater than 0"),
        ("ARCHFARM_BUILDER_TIMEOUT", "xyz", "seconds greater than 0"),
        ("ARCHFARM_REGISTRY_ATTEMPTS", "0", "1 or more"),
        ("ARCHFARM_REGISTRY_TIMEOUT", "-1", "seconds greater than 0"),
        ("ARCHFARM_REGISTRY_CHUNK_SIZE", "0", "4096 or more"),
        ("ARCHFARM_OFFLINE", "maybe", "1, true, yes or on"),
        ("ARCHFARM_LOG", "archfarm=loud", "ARCHFARM_LOG"),
    ] {
        let out = repo.command(&["list", "--names"]).env(var, value).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(var) && err.contains(accepts), "{var}={value}: {err}");
    }
    // Empty is unset, as for every other variable.
    let out = repo.command(&["list", "--names"]).env("ARCHFARM_REGISTRY_TIMEOUT", "").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
