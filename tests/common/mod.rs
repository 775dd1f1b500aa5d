//! Helpers shared by the whole-broker tests that run `quiver serve` as a child process.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Stops a broker child politely (SIGTERM, up to 10 s), killing it if it hangs, then
/// removes what it leaves behind (only after a clean exit, so a hang keeps its evidence).
pub fn stop_broker(child: &mut Child, leftovers: &[&Path]) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            for path in leftovers {
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(path);
                } else {
                    let _ = std::fs::remove_file(path);
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
