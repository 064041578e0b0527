//! Impossible travel: two successful sign-ins of one account from places farther apart than a
//! traveller at [`MAX_SPEED_KMH`] could cover in the time between, placed by an offline GeoIP
//! database ([`GeoLocator`]; `detection.geoip_database`). The places are the clients' addresses
//! as the shop passes them. Without a database the point is off.
//! Must never: look an address up over the network, keep the places it computed, or detect
//! when either address has no place (a private address, one the database does not know).

use std::net::IpAddr;

use strongroom_types::Timestamp;

/// The fastest a person travels between two sign-ins (an airliner).
pub const MAX_SPEED_KMH: f64 = 1_000.0;

/// Slack for the database's imprecision: two places closer than this are never impossible.
pub const SLACK_KM: f64 = 100.0;

/// Places an address on the globe (latitude, longitude in degrees), offline.
pub trait GeoLocator: Send + Sync + std::fmt::Debug {
    /// Where `ip` is, if the database knows it.
    fn locate(&self, ip: IpAddr) -> Option<(f64, f64)>;
}

/// The great-circle distance between two places, in kilometres.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6_371.0;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The distance between two sign-ins (at `from`, then at `to`) when no traveller could have
/// made it in the time between; `None` when it is possible.
pub fn impossible(from: (f64, f64), from_at: Timestamp, to: (f64, f64), to_at: Timestamp) -> Option<f64> {
    let km = distance_km(from, to);
    #[allow(clippy::cast_precision_loss, reason = "milliseconds between sign-ins fit an f64 exactly enough")]
    let hours = (to_at.millis_since(from_at).max(0) as f64) / 3_600_000.0;
    (km > MAX_SPEED_KMH * hours + SLACK_KM).then_some(km)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: (f64, f64) = (52.52, 13.405);
    const NEW_YORK: (f64, f64) = (40.7128, -74.006);
    const POTSDAM: (f64, f64) = (52.3906, 13.0645);

    #[test]
    fn distances_and_speeds() {
        let km = distance_km(BERLIN, NEW_YORK);
        assert!((6_300.0..6_450.0).contains(&km), "{km}");
        let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
        let hour = Timestamp::from_unix_millis(1_790_000_000_000 + 3_600_000);
        let nine_hours = Timestamp::from_unix_millis(1_790_000_000_000 + 9 * 3_600_000);
        assert!(impossible(BERLIN, t0, NEW_YORK, hour).is_some());
        assert!(impossible(BERLIN, t0, NEW_YORK, nine_hours).is_none(), "a flight");
        assert!(impossible(BERLIN, t0, POTSDAM, t0).is_none(), "within the slack");
    }
}
