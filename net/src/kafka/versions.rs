//! The one table of Kafka APIs Quiver serves and the versions of each, as advertised in
//! ApiVersions and enforced by the request decoder.
//!
//! Invariant, checked at compile time: every range lies inside what kafka-protocol 0.18 can
//! decode (request) and encode (response) for that API, so a version we advertise can never fail
//! in the codec for lack of support. No range had to be clamped for 0.18: the crate supports at
//! least the versions listed here for every API (it goes further for most of them).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

/// One API Quiver serves, with the inclusive range of versions it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupportedApi {
    pub api_key: ApiKey,
    pub versions: VersionRange,
}

/// Calls `$callback!` with the table of served APIs, one `Key: RequestType, min..=max;` entry per
/// API, so that the advertised table, the compile-time checks and the response encoder in
/// `frame.rs` are all generated from this one list. `Key` is the variant name shared by `ApiKey`,
/// `RequestKind` and `ResponseKind`.
macro_rules! served_apis {
    ($callback:ident) => {
        $callback! {
            ApiVersions: ApiVersionsRequest, 0..=3;
            Metadata: MetadataRequest, 0..=12;
            // Produce v3 is the first version that carries RecordBatch v2, the only record
            // format we store.
            Produce: ProduceRequest, 3..=10;
            // Fetch v4 is the first version whose responses carry RecordBatch v2.
            Fetch: FetchRequest, 4..=16;
            ListOffsets: ListOffsetsRequest, 1..=7;
            FindCoordinator: FindCoordinatorRequest, 0..=4;
            JoinGroup: JoinGroupRequest, 0..=9;
            SyncGroup: SyncGroupRequest, 0..=5;
            Heartbeat: HeartbeatRequest, 0..=4;
            LeaveGroup: LeaveGroupRequest, 0..=5;
            OffsetCommit: OffsetCommitRequest, 2..=9;
            OffsetFetch: OffsetFetchRequest, 1..=9;
            ListGroups: ListGroupsRequest, 0..=4;
            DescribeGroups: DescribeGroupsRequest, 0..=5;
            DeleteGroups: DeleteGroupsRequest, 0..=2;
            InitProducerId: InitProducerIdRequest, 0..=4;
            CreateTopics: CreateTopicsRequest, 2..=7;
            DeleteTopics: DeleteTopicsRequest, 1..=6;
            CreatePartitions: CreatePartitionsRequest, 0..=3;
            DescribeConfigs: DescribeConfigsRequest, 1..=4;
            AlterConfigs: AlterConfigsRequest, 0..=2;
            DescribeCluster: DescribeClusterRequest, 0..=1;
        }
    };
}
pub(crate) use served_apis;

/// True when `ours` is a non-empty range inside `codec`.
const fn range_within(ours: VersionRange, codec: VersionRange) -> bool {
    ours.min <= ours.max && codec.min <= ours.min && ours.max <= codec.max
}

macro_rules! define_table {
    ($($key:ident: $request:ident, $min:literal..=$max:literal;)*) => {
        /// Every API Quiver serves, in the order ApiVersions lists them.
        pub const SUPPORTED_APIS: &[SupportedApi] = &[
            $(SupportedApi {
                api_key: ApiKey::$key,
                versions: VersionRange { min: $min, max: $max },
            },)*
        ];

        // The codec must handle every version we advertise, in both directions, and the request
        // type named in the table must be the one for that key.
        $(
            const _: () = {
                use kafka_protocol::messages::$request;
                use kafka_protocol::protocol::{Message, Request};
                let ours = VersionRange { min: $min, max: $max };
                assert!(range_within(ours, <$request as Message>::VERSIONS));
                assert!(range_within(ours, <<$request as Request>::Response as Message>::VERSIONS));
                assert!(<$request as Request>::KEY == ApiKey::$key as i16);
            };
        )*
    };
}
served_apis!(define_table);

/// Largest raw api key the lookup table covers. Kafka's keys are small and dense (0..=92 in
/// kafka-protocol 0.18); a key above this is simply not served.
const MAX_TABLE_API_KEY: usize = 127;

/// `SUPPORTED_APIS` indexed by raw api key, so the per-request lookup is one array access.
const BY_API_KEY: [Option<VersionRange>; MAX_TABLE_API_KEY + 1] = {
    let mut table = [None; MAX_TABLE_API_KEY + 1];
    let mut index = 0;
    while index < SUPPORTED_APIS.len() {
        let api = SUPPORTED_APIS[index];
        let key = api.api_key as i16;
        assert!(key >= 0 && (key as usize) <= MAX_TABLE_API_KEY);
        // Each key must appear once, or ApiVersions would advertise it twice.
        assert!(table[key as usize].is_none());
        table[key as usize] = Some(api.versions);
        index += 1;
    }
    table
};

/// The versions of `api_key` we serve, or `None` if we do not serve that API at all.
pub fn supported(api_key: ApiKey) -> Option<VersionRange> {
    BY_API_KEY.get(api_key as i16 as usize).copied().flatten()
}

/// True if we serve `api_key` at `api_version`.
pub fn is_supported(api_key: ApiKey, api_version: i16) -> bool {
    supported(api_key).is_some_and(|range| range.min <= api_version && api_version <= range.max)
}

/// The ApiVersions response for a request at `requested_version`, listing `SUPPORTED_APIS`.
///
/// When we do not serve `requested_version`, this is Kafka's KIP-511 fallback: error
/// UNSUPPORTED_VERSION with the full table, which the caller must encode at
/// [`api_versions_response_version`] (v0), the one version every client can parse.
pub fn api_versions_response(requested_version: i16) -> ApiVersionsResponse {
    let error_code = if is_supported(ApiKey::ApiVersions, requested_version) {
        0
    } else {
        ResponseError::UnsupportedVersion.code()
    };
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.api_key as i16)
                .with_min_version(api.versions.min)
                .with_max_version(api.versions.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// The version at which to encode the ApiVersions response to a request at `requested_version`:
/// the same version when we serve it, else v0 (see [`api_versions_response`]).
pub fn api_versions_response_version(requested_version: i16) -> i16 {
    if is_supported(ApiKey::ApiVersions, requested_version) {
        requested_version
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn table_never_exceeds_the_codec_range() {
        for api in SUPPORTED_APIS {
            let codec = api.api_key.valid_versions();
            assert!(
                range_within(api.versions, codec),
                "{:?}: we serve {} but kafka-protocol handles {}",
                api.api_key,
                api.versions,
                codec
            );
        }
    }

    #[test]
    fn lookup_agrees_with_table_and_rejects_unserved_apis() {
        for api in SUPPORTED_APIS {
            assert_eq!(supported(api.api_key), Some(api.versions));
            assert!(is_supported(api.api_key, api.versions.min));
            assert!(is_supported(api.api_key, api.versions.max));
            assert!(!is_supported(api.api_key, api.versions.max + 1));
            assert!(!is_supported(api.api_key, api.versions.min - 1));
        }
        let served = ApiKey::iter()
            .filter(|key| supported(*key).is_some())
            .count();
        assert_eq!(served, SUPPORTED_APIS.len());
        assert_eq!(supported(ApiKey::SaslHandshake), None);
        assert_eq!(supported(ApiKey::DeleteShareGroupOffsets), None);
    }

    #[test]
    fn api_versions_v3_round_trips() {
        let response = api_versions_response(3);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
        let mut buf = BytesMut::new();
        response.encode(&mut buf, 3).expect("encodable");
        let decoded = ApiVersionsResponse::decode(&mut buf.freeze(), 3).expect("decodable");
        assert_eq!(decoded, response);
        let fetch = decoded
            .api_keys
            .iter()
            .find(|api| api.api_key == ApiKey::Fetch as i16)
            .expect("Fetch is advertised");
        assert_eq!((fetch.min_version, fetch.max_version), (4, 16));
    }

    #[test]
    fn every_served_api_versions_version_round_trips() {
        for version in 0..=3 {
            let response = api_versions_response(version);
            let mut buf = BytesMut::new();
            response.encode(&mut buf, version).expect("encodable");
            let decoded =
                ApiVersionsResponse::decode(&mut buf.freeze(), version).expect("decodable");
            assert_eq!(decoded, response, "v{version}");
        }
    }

    #[test]
    fn unsupported_api_versions_falls_back_to_v0_with_error_35() {
        for requested in [4, 5, i16::MAX, -1] {
            let response = api_versions_response(requested);
            assert_eq!(response.error_code, 35);
            assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
            assert_eq!(api_versions_response_version(requested), 0);
        }
        assert_eq!(api_versions_response_version(3), 3);
    }
}
