//! An offline GeoIP database in MaxMind's format (`.mmdb`, e.g. GeoLite2-City or a database
//! the operator builds), read once into memory at start for impossible-travel detection.
//! Must never: download or update the database (the operator provides the file), or fail a
//! sign-in over an address the database does not know.

use std::net::IpAddr;
use std::path::Path;

use strongroom_domain::detection::travel::GeoLocator;

/// A MaxMind-format database in memory.
pub struct MmdbLocator {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for MmdbLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmdbLocator").field("database_type", &self.reader.metadata.database_type).finish()
    }
}

impl MmdbLocator {
    /// Reads the database at `path`; an error names what is wrong with the file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("not a readable MaxMind database ({e})"))?;
        Ok(Self { reader })
    }
}

impl GeoLocator for MmdbLocator {
    fn locate(&self, ip: IpAddr) -> Option<(f64, f64)> {
        let found = self.reader.lookup(ip).ok()?;
        let city: maxminddb::geoip2::City<'_> = found.decode().ok()??;
        Some((city.location.latitude?, city.location.longitude?))
    }
}
