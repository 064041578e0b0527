//! Roles: named sets of permissions (the same names as API key scopes), the built-in ones every
//! shop has and the custom ones a shop defines.
//!
//! Owns: the built-in role matrix (documented in docs/roles.md, and tested to match it), the
//! rules for custom role names and permissions, and turning a staff member's roles into
//! permissions.
//! Must never: let a custom role shadow a built-in one, or grant a permission that is not in
//! [`Scope::ALL`].

use crate::api_keys::Scope;
use crate::error::{DomainError, FieldError};

/// A built-in role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinRole {
    /// Its name.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// What it may do.
    pub permissions: &'static [Scope],
}

/// The built-in roles, in documentation order.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "owner",
        description: "Everything, including the shop's keys and full card numbers.",
        permissions: Scope::ALL,
    },
    BuiltinRole {
        name: "admin",
        description: "Runs the shop's staff, API keys and customers; sees personal data, never full card numbers or keys.",
        permissions: &[
            Scope::AdminStaff,
            Scope::AdminApiKeys,
            Scope::AdminWebhooks,
            Scope::AdminMetrics,
            Scope::IdentityCustomers,
            Scope::VaultWrite,
            Scope::VaultRead,
            Scope::VaultRevealMasked,
            Scope::VaultRevealPii,
            Scope::PrivacyErase,
        ],
    },
    BuiltinRole {
        name: "support",
        description: "Helps customers: looks them up and sees their data masked only.",
        permissions: &[Scope::IdentityCustomers, Scope::VaultRead, Scope::VaultRevealMasked],
    },
    BuiltinRole {
        name: "finance",
        description: "Refunds payments and reads payments, orders and refunds; sees masked data.",
        permissions: &[Scope::PaymentsRefund, Scope::PaymentsRead, Scope::VaultRead, Scope::VaultRevealMasked],
    },
    BuiltinRole {
        name: "security",
        description: "Keys, incidents and the audit log; metrics; blocked clients.",
        permissions: &[
            Scope::AdminKeys,
            Scope::SecurityManage,
            Scope::AuditRead,
            Scope::AdminMetrics,
            Scope::VaultRead,
            Scope::VaultRevealMasked,
        ],
    },
    BuiltinRole {
        name: "auditor",
        description: "Reads the audit log, its checkpoints and proofs; nothing else.",
        permissions: &[Scope::AuditRead],
    },
];

/// The built-in role of that name.
pub fn builtin(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

/// Checks a custom role's name: 2 to 40 of `a-z 0-9 _ -`, starting with a letter, not built in.
pub fn check_custom_name(name: &str) -> Result<(), DomainError> {
    let well_formed = (2..=40).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(DomainError::invalid("/name", "must be 2 to 40 of a-z, 0-9, _ and -, starting with a letter"));
    }
    if builtin(name).is_some() {
        return Err(DomainError::Conflict("role_exists", "a built-in role has that name"));
    }
    Ok(())
}

/// Parses permission names; errors name each unknown one.
pub fn parse_permissions(names: &[String]) -> Result<Vec<Scope>, DomainError> {
    let mut errors = Vec::new();
    let mut scopes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Scope::parse(name) {
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => errors.push(FieldError::new(format!("/permissions/{i}"), "is listed twice")),
            None => errors.push(FieldError::new(format!("/permissions/{i}"), "is not a known permission")),
        }
    }
    if names.is_empty() {
        errors.push(FieldError::new("/permissions", "must name at least one permission"));
    }
    if errors.is_empty() { Ok(scopes) } else { Err(DomainError::Validation(errors)) }
}

/// The permissions of a set of roles (built-in or among `custom`), each once, in catalogue order.
/// Role names that no longer exist give nothing.
pub fn permissions_of(roles: &[String], custom: &[crate::ports::RoleRecord]) -> Vec<Scope> {
    let mut held = Vec::new();
    for role in roles {
        if let Some(b) = builtin(role) {
            held.extend_from_slice(b.permissions);
        } else if let Some(c) = custom.iter().find(|c| &c.name == role) {
            held.extend(c.permissions.iter().filter_map(|p| Scope::parse(p)));
        }
    }
    Scope::ALL.iter().copied().filter(|s| held.contains(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_matrix_matches_the_code() {
        let doc = include_str!("../../../../docs/roles.md");
        for role in BUILTIN_ROLES {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", role.name)))
                .unwrap_or_else(|| unreachable!("docs/roles.md has no row for {}", role.name));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            for (i, scope) in Scope::ALL.iter().enumerate() {
                let marked = cells.get(i + 2).is_some_and(|c| *c == "✔");
                assert_eq!(marked, role.permissions.contains(scope), "{} / {}", role.name, scope);
            }
        }
    }

    #[test]
    fn support_sees_masked_data_only() {
        let support = builtin("support").map(|r| r.permissions).unwrap_or_default();
        assert!(!support.contains(&Scope::VaultRevealPii) && !support.contains(&Scope::VaultRevealCard));
    }

    #[test]
    fn custom_names_cannot_shadow_builtins() {
        assert!(check_custom_name("owner").is_err());
        assert!(check_custom_name("Owner").is_err());
        assert!(check_custom_name("night-shift").is_ok());
    }

    #[test]
    fn permissions_are_a_union_without_repeats() {
        let got = permissions_of(&["support".into(), "finance".into(), "gone".into()], &[]);
        assert_eq!(
            got,
            vec![
                Scope::VaultRead,
                Scope::VaultRevealMasked,
                Scope::IdentityCustomers,
                Scope::PaymentsRefund,
                Scope::PaymentsRead
            ]
        );
    }
}
