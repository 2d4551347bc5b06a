//! Macros that turn the conformance suites into one named test per behaviour.

/// Expands to a module `$module` holding one `#[tokio::test]` per store function of
/// [`conformance`](crate::conformance), named after it, each on a fresh store from `$setup`
/// (plus `installation_ids_differ_between_stores`, which calls `$setup` twice).
///
/// `$setup` is a closure taking the test's name (`&'static str`, for
/// [`skip_or_panic`](crate::servers) messages) and returning a future of a
/// [`StoreFixture`](crate::conformance::StoreFixture) or an `Option` of one, `None` meaning
/// the test is skipped (the setup printed why). The store must be empty. The module imports
/// everything of the enclosing one; the test crate needs `tokio` with its `macros` feature.
///
/// ```no_run
/// use leasehold_testkit::conformance::Fixture;
/// leasehold_testkit::store_conformance_tests!(memory_store, |_test| async {
///     Fixture::store(leasehold_core::MemoryStore::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($module:ident, $setup:expr $(,)?) => {
        $crate::__conformance_tests! {
            $module, $setup, $crate::conformance::StoreFixture,
            plain [
                an_empty_store_has_nothing_due,
                insert_stores_version_1_and_get_returns_every_field,
                insert_refuses_an_existing_id,
                get_of_an_unknown_id_is_none,
                update_is_a_compare_and_set_that_bumps_the_version,
                update_of_a_missing_record_is_lease_not_found,
                delete_is_a_compare_and_set_and_a_missing_record_is_lease_not_found,
                list_is_ordered_by_id_and_honours_the_filter_after_and_limit,
                count_counts_every_match_ignoring_limit,
                count_ignores_after,
                claim_due_takes_due_unclaimed_records_earliest_first_up_to_limit,
                claim_due_frees_ended_claims_for_any_owner,
                claim_due_takes_leases_due_exactly_now_and_claims_ending_now,
                concurrent_claim_due_callers_never_get_the_same_record,
                next_due_is_the_latest_of_due_at_and_claim_end_ignoring_revoked,
                installation_id_is_stable_and_not_empty,
                damaged_is_empty_and_remove_damaged_leaves_typed_records_alone,
                release_claims_ends_the_owners_claims_and_makes_them_due,
                insert_within_checks_the_secret_count_and_inserts,
                claim_for_revoke_claims_unless_someone_is_at_work,
            ]
            probed []
            pair [installation_ids_differ_between_stores]
        }
    };
}

/// Expands to a module `$module` holding one `#[tokio::test]` per coordination-store function
/// of [`conformance`](crate::conformance), named after it. `$setup` is as for
/// [`store_conformance_tests!`], returning a
/// [`CoordinationFixture`](crate::conformance::CoordinationFixture) (or an `Option` of one).
///
/// ```no_run
/// use leasehold_testkit::conformance::Fixture;
/// leasehold_testkit::coordination_conformance_tests!(memory_coordination, |_test| async {
///     Fixture::coordination_of(leasehold_core::MemoryStore::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! coordination_conformance_tests {
    ($module:ident, $setup:expr $(,)?) => {
        $crate::__conformance_tests! {
            $module, $setup, $crate::conformance::CoordinationFixture,
            plain [
                put_member_stores_and_replaces,
                member_of_unknown_is_none,
                members_lists_one_group_ordered_by_member,
                set_state_moves_only_entries_in_from,
                withdraw_removes_and_returns_the_old_state,
                claim_group_is_exclusive_until_it_ends,
                claim_group_is_renewed_by_its_holder,
                concurrent_claims_elect_one_holder,
                release_group_ends_only_the_holders_claim,
                group_claim_returns_the_holder_and_end_or_none,
                changed_returns_within_its_bound,
            ]
            probed []
            pair []
        }
    };
}

/// Expands to a module `$module` holding one `#[tokio::test]` per provider function of
/// [`conformance`](crate::conformance), named after it. `$setup` is as for
/// [`store_conformance_tests!`], returning a
/// [`ProviderFixture`](crate::conformance::ProviderFixture) (or an `Option` of one) of a
/// configured, reachable provider, with a probe when the backend can check credentials.
///
/// Not generated: `revoke_failure_while_unreachable_is_temporary`, which needs a backend that
/// is down.
///
/// ```no_run
/// use leasehold_testkit::conformance::Fixture;
/// leasehold_testkit::provider_conformance_tests!(recording, |_test| async {
///     Fixture::provider(leasehold_testkit::RecordingProvider::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! provider_conformance_tests {
    ($module:ident, $setup:expr $(,)?) => {
        $crate::__conformance_tests! {
            $module, $setup, $crate::conformance::ProviderFixture,
            plain [
                kind_is_stable_and_not_empty,
                validate_succeeds_and_leaves_nothing_behind,
                failed_create_leaves_nothing_behind,
                renew_extends_a_live_credential,
                revoke_is_idempotent,
            ]
            probed [
                create_returns_a_working_credential,
                create_refuses_an_existing_username,
                revoke_removes_the_credential,
                revoke_by_the_reference_written_ahead_removes_the_credential,
            ]
            pair []
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (
        $module:ident, $setup:expr, $fixture:ty,
        plain [$($plain:ident),* $(,)?]
        probed [$($probed:ident),* $(,)?]
        pair [$($pair:ident),* $(,)?]
    ) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[::tokio::test]
                async fn $plain() {
                    let test = ::core::concat!(::core::module_path!(), "::", ::core::stringify!($plain));
                    let setup = $setup;
                    let fixture: ::core::option::Option<$fixture> =
                        ::core::convert::Into::into(setup(test).await);
                    let ::core::option::Option::Some(fixture) = fixture else {
                        return;
                    };
                    $crate::conformance::$plain(fixture.get()).await;
                    fixture.finish().await;
                }
            )*

            $(
                #[::tokio::test]
                async fn $probed() {
                    let test = ::core::concat!(::core::module_path!(), "::", ::core::stringify!($probed));
                    let setup = $setup;
                    let fixture: ::core::option::Option<$fixture> =
                        ::core::convert::Into::into(setup(test).await);
                    let ::core::option::Option::Some(fixture) = fixture else {
                        return;
                    };
                    $crate::conformance::$probed(fixture.get(), fixture.probe()).await;
                    fixture.finish().await;
                }
            )*

            $(
                #[::tokio::test]
                async fn $pair() {
                    let test = ::core::concat!(::core::module_path!(), "::", ::core::stringify!($pair));
                    let setup = $setup;
                    let a: ::core::option::Option<$fixture> =
                        ::core::convert::Into::into(setup(test).await);
                    let ::core::option::Option::Some(a) = a else {
                        return;
                    };
                    let b: ::core::option::Option<$fixture> =
                        ::core::convert::Into::into(setup(test).await);
                    let ::core::option::Option::Some(b) = b else {
                        return;
                    };
                    $crate::conformance::$pair(a.get(), b.get()).await;
                    a.finish().await;
                    b.finish().await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    /// The suite functions taking one argument of `kind`, as declared in `conformance.rs`.
    fn declared(kind: &str, second: Option<&str>) -> Vec<String> {
        let source = include_str!("conformance.rs").replace('\n', " ");
        let mut found = Vec::new();
        for part in source.split("pub async fn ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let args: String = part[name.len()..]
                .split(')')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let params: Vec<&str> = args
                .trim_start_matches('(')
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            let first_ok = params.first().is_some_and(|p| p.ends_with(kind));
            let rest_ok = match second {
                None => params.len() == 1,
                Some(s) => params.len() == 2 && params[1].ends_with(s),
            };
            if first_ok && rest_ok && !name.ends_with("_conformance") {
                found.push(name);
            }
        }
        found
    }

    fn listed_in(text: &str, name: &str) -> bool {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == name)
    }

    fn macro_body(name: &str) -> &'static str {
        let source = include_str!("macros.rs");
        let start = source
            .find(&format!("macro_rules! {name}"))
            .expect("macro defined");
        let end = source[start..].find("\n}\n").expect("macro ends") + start;
        &source[start..end]
    }

    fn fn_body(name: &str) -> &'static str {
        let source = include_str!("conformance.rs");
        let start = source
            .find(&format!("pub async fn {name}("))
            .expect("function defined");
        let end = source[start..].find("\n}\n").expect("function ends") + start;
        &source[start..end]
    }

    #[test]
    fn every_suite_function_has_its_generated_test_and_runs_in_the_one_call_suite() {
        let cases = [
            ("store", "&dyn LeaseStore", None, "store_conformance"),
            (
                "coordination",
                "&dyn CoordinationStore",
                None,
                "coordination_conformance",
            ),
            (
                "provider",
                "&dyn DynamicSecretProvider",
                None,
                "provider_conformance",
            ),
            (
                "provider",
                "&dyn DynamicSecretProvider",
                Some("Option<&dyn CredentialProbe>"),
                "provider_conformance",
            ),
        ];
        for (kind, arg, second, one_call) in cases {
            let names = declared(arg, second);
            assert!(names.len() >= 4, "{kind}: {names:?}");
            let generated = macro_body(&format!("{kind}_conformance_tests"));
            let suite = fn_body(one_call);
            for name in &names {
                if name == "revoke_failure_while_unreachable_is_temporary" {
                    continue;
                }
                assert!(
                    listed_in(generated, name),
                    "{kind}_conformance_tests! makes no test of {name}"
                );
                assert!(listed_in(suite, name), "{one_call} does not run {name}");
            }
        }
        assert!(listed_in(
            macro_body("store_conformance_tests"),
            "installation_ids_differ_between_stores"
        ));
    }
}
