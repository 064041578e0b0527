//! Incidents and playbooks (`/v1/security/incidents`, scope `security:manage`, live keys and
//! staff only): list, read (with the timeline and the affected subjects), open by hand, change
//! the state or assignee (conditionally: a stale change answers 409), add notes, and run
//! playbook steps on an incident.
//! A merchant sees and changes its own incidents only.
//! Must never: show or change another merchant's incident, echo an input in an error, or put a
//! secret or personal data into a body (incidents hold ids, codes and checked text).

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use strongroom_domain::DomainError;
use strongroom_domain::detection::Decider;
use strongroom_domain::detection::incidents::{
    ChangeIncident, IncidentState, IncidentView, NewIncident, Severity, Subject,
};
use strongroom_domain::detection::playbooks::{Step, StepInput};
use strongroom_domain::ports::incidents::{IncidentRecord, SubjectRecord, TimelineEntry};
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Something an incident affected.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectBody {
    /// `account` (`cus_…`, `stf_…`), `token` (`tok_…`), `api_key` (`key_…`) or `client` (an
    /// address or prefix).
    pub kind: String,
    /// The id (`cus_…`, `stf_…`, `tok_…`, `key_…`) or, for a client, the address or prefix.
    pub id: String,
}

/// One line of an incident's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineBody {
    /// RFC 3339.
    pub at: String,
    /// `detector`, `operator`, a staff member (`stf_…`) or an API key (`key_…`).
    pub actor: String,
    /// `opened`, `detection`, `state`, `assigned`, `note` or `playbook`.
    pub kind: String,
    /// The detection's summary or the note.
    pub text: Option<String>,
    /// Ids and codes: the detection point and decision, the new state or assignee, the playbook
    /// step and its outcome.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<TimelineEntry> for TimelineBody {
    fn from(e: TimelineEntry) -> Self {
        Self { at: e.at.to_rfc3339(), actor: e.actor, kind: e.kind, text: e.text, data: e.data }
    }
}

/// An incident.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentBody {
    /// Always `security_incident`.
    pub object: &'static str,
    /// `inc_…`
    pub id: String,
    /// For people.
    pub title: String,
    /// `low`, `medium`, `high` or `critical`: the highest of what joined it.
    pub severity: String,
    /// `open`, `contained` or `resolved` (final).
    pub state: String,
    /// The staff member working on it.
    pub assignee: Option<String>,
    /// `detector`, a staff member or an API key.
    pub opened_by: String,
    /// RFC 3339.
    pub opened_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    pub resolved_at: Option<String>,
    /// What happened, oldest first (on a single incident).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineBody>>,
    /// What it affected, once each (on a single incident).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<SubjectBody>>,
}

impl IncidentBody {
    fn of(i: IncidentRecord) -> Self {
        Self {
            object: "security_incident",
            severity: i.severity.as_str().to_owned(),
            opened_at: i.opened_at.to_rfc3339(),
            updated_at: i.updated_at.to_rfc3339(),
            resolved_at: i.resolved_at.map(Timestamp::to_rfc3339),
            id: i.id,
            title: i.title,
            state: i.state,
            assignee: i.assignee,
            opened_by: i.opened_by,
            timeline: None,
            subjects: None,
        }
    }

    /// An incident with its timeline and subjects.
    pub fn full(view: IncidentView) -> Self {
        let mut body = Self::of(view.incident);
        body.timeline = Some(view.timeline.into_iter().map(TimelineBody::from).collect());
        body.subjects =
            Some(view.subjects.into_iter().map(|s: SubjectRecord| SubjectBody { kind: s.kind, id: s.value }).collect());
        body
    }
}

/// A list of incidents.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentList {
    /// Always `list`.
    pub object: &'static str,
    /// Newest first.
    pub data: Vec<IncidentBody>,
}

/// Which incidents.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IncidentListParams {
    /// Only those in this state (`open`, `contained`, `resolved`).
    pub state: Option<String>,
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// An incident opened by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenIncidentRequest {
    /// For people, up to 200 characters (no card number).
    pub title: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// A first note, up to 2000 characters.
    pub note: Option<String>,
    /// What it is about.
    #[serde(default)]
    pub subjects: Vec<SubjectBody>,
}

/// A change of an incident.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeIncidentRequest {
    /// The new state: `contained` (from open), `open` (from contained), `resolved` (from either;
    /// final).
    pub state: Option<String>,
    /// A staff member of the shop (`stf_…`), or `null` for nobody.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// A note.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// Up to 2000 characters (no card number).
    pub text: String,
}

fn caller<'a>(auth: &'a ApiKeyAuth<scope::SecurityManage>, context: &'a RequestContext) -> Decider<'a> {
    Decider::Caller(&auth.principal, context.ip, context.request_id.as_deref())
}

/// Incidents of the caller's merchant, newest first.
#[utoipa::path(get, path = "/v1/security/incidents", tag = "security", security(("api_key" = ["security:manage"])),
    params(IncidentListParams),
    responses((status = 200, body = IncidentList), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_incidents(
    auth: ApiKeyAuth<scope::SecurityManage>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<IncidentListParams>,
) -> Result<Json<IncidentList>, ApiError> {
    let found = state.incidents.list(Some(auth.principal.merchant_id()), params.state.as_deref(), params.limit).await?;
    Ok(Json(IncidentList { object: "list", data: found.into_iter().map(IncidentBody::of).collect() }))
}

/// One incident, with its timeline and affected subjects.
#[utoipa::path(get, path = "/v1/security/incidents/{id}", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`inc_…`")),
    responses((status = 200, body = IncidentBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_incident(
    auth: ApiKeyAuth<scope::SecurityManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentBody>, ApiError> {
    let view = state.incidents.view(Some(auth.principal.merchant_id()), &id).await?;
    Ok(Json(IncidentBody::full(view)))
}

/// Opens an incident by hand. `409 incident_already_open` while one of the shop's incidents is
/// open or contained (detections and notes join that one).
#[utoipa::path(post, path = "/v1/security/incidents", tag = "security", security(("api_key" = ["security:manage"])),
    request_body = OpenIncidentRequest,
    responses(
        (status = 201, body = IncidentBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`incident_already_open`"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn open_incident(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OpenIncidentRequest>,
) -> Result<(StatusCode, Json<IncidentBody>), ApiError> {
    let severity = Severity::parse(&body.severity)
        .ok_or_else(|| DomainError::invalid("/severity", "must be low, medium, high or critical"))?;
    if body.subjects.len() > 100 {
        return Err(DomainError::invalid("/subjects", "at most 100").into());
    }
    let subjects = body
        .subjects
        .iter()
        .enumerate()
        .map(|(n, s)| Subject::parse(&s.kind, &s.id, &format!("/subjects/{n}")))
        .collect::<Result<Vec<_>, _>>()?;
    let new = NewIncident { title: body.title, severity, note: body.note, subjects };
    let merchant = auth.principal.merchant_id();
    let opened = state.incidents.open(caller(&auth, &context), merchant, new).await?;
    let view = state.incidents.view(Some(merchant), &opened.id).await?;
    Ok((StatusCode::CREATED, Json(IncidentBody::full(view))))
}

/// Changes an incident's state or assignee. The change applies only from the states it may
/// come from: of concurrent changes one wins, and a stale one answers
/// `409 incident_state_conflict` (`incident_resolved` once it is resolved).
#[utoipa::path(post, path = "/v1/security/incidents/{id}", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`inc_…`")),
    request_body = ChangeIncidentRequest,
    responses(
        (status = 200, body = IncidentBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`incident_state_conflict`, `incident_resolved`"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_incident(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChangeIncidentRequest>,
) -> Result<Json<IncidentBody>, ApiError> {
    let new_state = body.state.as_deref().map(|s| IncidentState::parse(s, "/state")).transpose()?;
    let change = ChangeIncident { state: new_state, assignee: body.assignee };
    let merchant = auth.principal.merchant_id();
    state.incidents.change(caller(&auth, &context), Some(merchant), &id, change).await?;
    let view = state.incidents.view(Some(merchant), &id).await?;
    Ok(Json(IncidentBody::full(view)))
}

/// Adds a note to an incident's timeline (a resolved one too).
#[utoipa::path(post, path = "/v1/security/incidents/{id}/notes", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`inc_…`")),
    request_body = NoteRequest,
    responses(
        (status = 201, body = TimelineBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_note(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NoteRequest>,
) -> Result<(StatusCode, Json<TimelineBody>), ApiError> {
    let entry =
        state.incidents.note(caller(&auth, &context), Some(auth.principal.merchant_id()), &id, &body.text).await?;
    Ok((StatusCode::CREATED, Json(TimelineBody::from(entry))))
}

/// A playbook step's parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookRequest {
    /// `revoke_sessions`: `subjects` (the incident's accounts, the default), `account`,
    /// `merchant` (every customer of the shop; four-eyes) or `everyone` (the operator only).
    pub scope: Option<String>,
    /// `revoke_sessions` with scope `account`: `cus_…` or `stf_…`.
    pub account: Option<String>,
    /// `suspend_api_keys`: the keys (`key_…`); none: the incident's API-key subjects.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// A dangerous step by a staff member: the approved request (`apr_…`) the first call opened.
    pub approval_id: Option<String>,
}

/// What a playbook step did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlaybookBody {
    /// Always `playbook_step`.
    pub object: &'static str,
    /// `inc_…`
    pub incident: String,
    /// The step.
    pub step: String,
    /// Its timeline entry: what it did is in `data.outcome`.
    pub entry: TimelineBody,
    /// `export_evidence`: the audit entries with their inclusion proofs and the signed
    /// checkpoint (`{checkpoint: {size, root, note, verifier_key}, entries: [{index, leaf,
    /// leaf_hash, proof}], truncated}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
}

/// Runs a playbook step on an incident: `revoke_sessions`, `suspend_api_keys`,
/// `freeze_refunds`, `freeze_forwarding`, `unfreeze_refunds`, `unfreeze_forwarding`,
/// `force_password_reset`, `export_evidence`, `notify_customers`. Audited and recorded on the
/// timeline. A dangerous step by a staff member answers `403 approval_required` with the id of
/// a request a second staff member approves; the repeated call with `approval_id` runs it.
#[utoipa::path(post, path = "/v1/security/incidents/{id}/playbooks/{step}", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`inc_…`"), ("step" = String, Path, description = "the step")),
    request_body = PlaybookRequest,
    responses(
        (status = 200, body = PlaybookBody),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "`approval_required`"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`incident_resolved`"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_playbook_step(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    ApiJson(body): ApiJson<PlaybookRequest>,
) -> Result<Json<PlaybookBody>, ApiError> {
    let step = Step::parse(&step)?;
    let input =
        StepInput { scope: body.scope, account: body.account, api_keys: body.api_keys, approval_id: body.approval_id };
    let done =
        state.playbooks.run(caller(&auth, &context), Some(auth.principal.merchant_id()), &id, step, input).await?;
    Ok(Json(PlaybookBody {
        object: "playbook_step",
        incident: id,
        step: step.as_str().to_owned(),
        entry: TimelineBody::from(done.entry),
        evidence: done.evidence,
    }))
}
