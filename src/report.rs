//! How the library tells its front end what is going on: progress of long tasks and
//! warnings. The library never prints; a front end supplies a [`Reporter`] (the CLI
//! draws bars and writes lines on stderr, the Python package calls back and raises
//! `warnings`). The shape follows rustic_core's `ProgressBars`: a reporter hands out one
//! [`Progress`] per task, which counts files and bytes as they are done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Receives progress and warnings from the library. Must be cheap to call from many
/// threads at once: copies report every chunk.
pub trait Reporter: Send + Sync {
    /// Starts a task (`"saving"`, `"pushing"`, …); its work is added as it is known.
    fn task(&self, title: &'static str) -> Arc<dyn Progress>;
    /// Something the user should know that does not stop the command (one line, no
    /// `czc:` prefix).
    fn warn(&self, message: &str);
    /// A passing notice, such as waiting for another process's lock.
    fn notice(&self, message: &str) {
        self.warn(message)
    }
    /// A failure that does not end the command (one file of many the git filter was
    /// given).
    fn error(&self, message: &str) {
        self.warn(message)
    }
}

/// One task's counters.
pub trait Progress: Send + Sync {
    /// More work became known.
    fn add_work(&self, files: u64, bytes: u64);
    /// Bytes copied, hashed or sent.
    fn bytes_done(&self, bytes: u64);
    /// Files (or objects) finished.
    fn files_done(&self, files: u64);
    /// The task ended (successfully or not); nothing more is reported to it.
    fn finish(&self);
}

/// Says nothing: the default when the front end gave no reporter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn task(&self, _title: &'static str) -> Arc<dyn Progress> {
        Arc::new(Silent)
    }
    fn warn(&self, _message: &str) {}
    fn notice(&self, _message: &str) {}
}

impl Progress for Silent {
    fn add_work(&self, _files: u64, _bytes: u64) {}
    fn bytes_done(&self, _bytes: u64) {}
    fn files_done(&self, _files: u64) {}
    fn finish(&self) {}
}

/// Counts what it hears, for front ends that poll instead of drawing (and for tests).
#[derive(Debug, Default)]
pub struct Counter {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub finished: AtomicU64,
}

impl Counter {
    /// (files done, bytes done) so far.
    pub fn done(&self) -> (u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
        )
    }
}

impl Progress for Counter {
    fn add_work(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }
    fn bytes_done(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn files_done(&self, files: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The task currently running, for code that reports without knowing which task it
/// serves (the cache's copy loops): forwards to whatever task is current. A command's
/// steps add work under one title until another title starts (or [`end`](Self::end)).
#[derive(Default)]
pub struct CurrentTask {
    task: Mutex<Option<(&'static str, Arc<dyn Progress>)>>,
}

impl CurrentTask {
    /// Adds work to the current task if it has `title`; else finishes it and starts
    /// `title` on `reporter`.
    pub fn work(&self, reporter: &dyn Reporter, title: &'static str, files: u64, bytes: u64) {
        let mut current = self.task.lock().unwrap_or_else(|p| p.into_inner());
        let task = match current.as_ref() {
            Some((running, task)) if *running == title => task.clone(),
            _ => {
                if let Some((_, old)) = current.take() {
                    old.finish();
                }
                let task = reporter.task(title);
                *current = Some((title, task.clone()));
                task
            }
        };
        drop(current);
        task.add_work(files, bytes);
    }

    /// Finishes the current task, if any.
    pub fn end(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((_, task)) = task {
            task.finish();
        }
    }

    fn with(&self, report: impl FnOnce(&dyn Progress)) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, task)| task.clone());
        if let Some(task) = task {
            report(task.as_ref());
        }
    }
}

impl Progress for CurrentTask {
    fn add_work(&self, files: u64, bytes: u64) {
        self.with(|task| task.add_work(files, bytes));
    }
    fn bytes_done(&self, bytes: u64) {
        self.with(|task| task.bytes_done(bytes));
    }
    fn files_done(&self, files: u64) {
        self.with(|task| task.files_done(files));
    }
    fn finish(&self) {
        self.end();
    }
}

/// For the few places below any object that could carry a reporter (a file lock's
/// wait): the front end sets it once at start; silent until then.
static PROCESS_REPORTER: OnceLock<Arc<dyn Reporter>> = OnceLock::new();

/// Sets the process-wide reporter (first call wins).
pub fn set_process_reporter(reporter: Arc<dyn Reporter>) {
    let _ = PROCESS_REPORTER.set(reporter);
}

/// The process-wide reporter, [`Silent`] if none was set.
pub fn process_reporter() -> Arc<dyn Reporter> {
    PROCESS_REPORTER
        .get()
        .cloned()
        .unwrap_or_else(|| Arc::new(Silent))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out a new counter per task and keeps them, by title.
    #[derive(Default)]
    struct Tasks(Mutex<Vec<(&'static str, Arc<Counter>)>>);

    impl Reporter for Tasks {
        fn task(&self, title: &'static str) -> Arc<dyn Progress> {
            let task = Arc::new(Counter::default());
            self.0.lock().unwrap().push((title, task.clone()));
            task
        }
        fn warn(&self, _message: &str) {}
    }

    #[test]
    fn work_under_one_title_is_one_task_and_a_new_title_finishes_the_old() {
        let reporter = Tasks::default();
        let current = CurrentTask::default();
        current.bytes_done(5); // no task yet: dropped
        current.work(&reporter, "saving", 1, 10);
        current.bytes_done(10);
        current.work(&reporter, "saving", 1, 20);
        current.files_done(2);
        current.work(&reporter, "pushing", 2, 30);
        current.bytes_done(30);
        current.end();
        current.bytes_done(7); // after the end: dropped
        let tasks = reporter.0.lock().unwrap();
        let titles: Vec<&str> = tasks.iter().map(|(title, _)| *title).collect();
        assert_eq!(titles, ["saving", "pushing"]);
        let (_, saving) = &tasks[0];
        assert_eq!(saving.files_total.load(Ordering::Relaxed), 2);
        assert_eq!(saving.bytes_total.load(Ordering::Relaxed), 30);
        assert_eq!(saving.done(), (2, 10));
        assert_eq!(saving.finished.load(Ordering::Relaxed), 1);
        let (_, pushing) = &tasks[1];
        assert_eq!(pushing.done(), (0, 30));
        assert_eq!(pushing.finished.load(Ordering::Relaxed), 1);
    }
}
