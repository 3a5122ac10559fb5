//! Integration tests of camwire-server: real SQLite files in temporary directories and
//! real HTTP on loopback ports. One test binary, so the suite links once.

/// Defines the tests `NAME::sqlite` and `NAME::postgres`, which run
/// `async fn NAME(database: Database)` on a new database of each kind. The PostgreSQL
/// test prints one line and passes when no PostgreSQL server is configured.
macro_rules! on_both_databases {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test(crate::common::Database::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(database) = crate::common::Database::postgres(module_path!()) else {
                    return;
                };
                super::$test(database).await;
            }
        }
    };
}

mod admin;
mod bad_input;
mod cli;
mod common;
mod crash;
mod embedded;
mod leases;
mod oneshot;
mod openapi;
mod pool;
mod process;
mod restart;
mod signout;
mod stress;
mod wg_interface;
