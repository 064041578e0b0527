//! Country codes: the ISO 3166-1 alpha-2 codes assigned to countries and territories (249, as
//! of ISO 3166-1:2020 with its newsletters, the list Debian's `iso-codes` 4.15 carries), plus `XK`
//! (Kosovo), a user-assigned code the European Commission, SWIFT's IBAN registry and the card
//! networks use. Reserved, withdrawn and unassigned codes (`ZZ`, `UK`, `EU`, `AN`…) are refused.

/// Assigned ISO 3166-1 alpha-2 codes, sorted.
const ASSIGNED: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];

/// User-assigned codes in general use.
const USER_ASSIGNED: &[&str] = &["XK"];

/// Whether `code` (upper case) is an assigned ISO 3166-1 alpha-2 code or `XK`.
pub fn is_country(code: &str) -> bool {
    ASSIGNED.binary_search(&code).is_ok() || USER_ASSIGNED.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_complete() {
        assert_eq!(ASSIGNED.len(), 249);
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        for code in ["DE", "GB", "US", "FR", "JP", "AX", "SS", "BQ", "CW", "XK"] {
            assert!(is_country(code), "{code}");
        }
        for code in ["ZZ", "UK", "EU", "AN", "YU", "XX", "AA", "QM", "de", "D", "DEU", ""] {
            assert!(!is_country(code), "{code}");
        }
    }
}
