//! InitProducerId for idempotent producers. Ids come from the controller shard so they
//! are unique broker-wide. Transactions are not supported.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use quiver_engine::types::ShardId;

use crate::kafka::broker::shard;

pub async fn handle(req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return resp.with_error_code(E::TransactionalIdAuthorizationFailed.code());
    }
    // KIP-360: a known producer asking again gets its epoch bumped.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match shard()
        .ctx
        .run_on(ShardId(0), || async { shard().allocate_producer_id() })
        .await
    {
        Ok(id) => resp
            .with_producer_id(kafka_protocol::messages::ProducerId(id))
            .with_producer_epoch(0),
        Err(_) => resp.with_error_code(E::CoordinatorNotAvailable.code()),
    }
}
