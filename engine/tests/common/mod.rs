//! Helpers shared by the engine's tests on real files.

use std::future::Future;
use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};
use quiver_engine::runtime::prepare_io;

/// Runs `f` on a fresh glommio executor, given an empty directory that direct I/O works in
/// (`<CARGO_TARGET_TMPDIR>/<name>-<pid>`, on target/'s ext4: /tmp may be tmpfs, where
/// O_DIRECT is unavailable). The directory is removed afterwards.
pub fn run_with_dir<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let inside = dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            prepare_io(&inside).await.unwrap();
            f(inside).await
        })
        .unwrap()
        .join()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
