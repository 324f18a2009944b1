-- Steward's initial schema: alert deduplication, analyses, guard decisions,
-- the action history and dead letters.

-- One row per alert instance and status (firing, resolved). The primary key
-- makes repeated Alertmanager deliveries of the same instance detectable
-- long after JetStream's duplicate window has passed.
CREATE TABLE alert_instances (
    correlation_id uuid        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('firing', 'resolved')),
    cluster        text        NOT NULL,
    fingerprint    text        NOT NULL,
    alertname      text        NOT NULL,
    starts_at      timestamptz NOT NULL,
    labels         jsonb       NOT NULL,
    annotations    jsonb       NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    deliveries     integer     NOT NULL DEFAULT 1,
    -- Set once the instance's event was published; a row without it was
    -- interrupted and is handled again on redelivery.
    processed_at   timestamptz,
    -- The proposal that answers this firing alert, when an analysis of the
    -- same workload covered it instead of a proposal of its own.
    covered_by     uuid,
    PRIMARY KEY (correlation_id, status)
);

-- One row per recommendation, with how it was produced.
CREATE TABLE analyses (
    proposal_id       uuid        PRIMARY KEY,
    correlation_id    uuid        NOT NULL,
    cluster           text        NOT NULL,
    alertname         text        NOT NULL,
    target_kind       text        NOT NULL,
    namespace         text        NOT NULL,
    target_name       text        NOT NULL,
    action            text        NOT NULL,
    parameters        jsonb       NOT NULL,
    confidence        double precision NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    reasoning         text        NOT NULL,
    analyzer          text        NOT NULL CHECK (analyzer IN ('rules', 'llm', 'escalation')),
    -- Namespace and owning workload the analyzed alerts are about; further
    -- alerts with the same key are covered by this analysis for a while.
    workload_key      text        NOT NULL DEFAULT '',
    -- Other alerts this analysis answers.
    covered           integer     NOT NULL DEFAULT 0,
    endpoint          text        NOT NULL DEFAULT '',
    model             text        NOT NULL DEFAULT '',
    fallback_reason   text        NOT NULL DEFAULT '',
    prompt_tokens     integer     NOT NULL DEFAULT 0,
    completion_tokens integer     NOT NULL DEFAULT 0,
    latency_ms        integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The encoded `proposed` event, republished unchanged on redelivery.
    event             bytea       NOT NULL
);
CREATE INDEX analyses_correlation ON analyses (correlation_id);
CREATE INDEX analyses_workload ON analyses (cluster, workload_key, created_at DESC);

-- A workload being analyzed right now, so that replicas do not analyze the
-- same workload at once. A crashed replica's claim expires.
CREATE TABLE analysis_claims (
    cluster       text        NOT NULL,
    workload_key  text        NOT NULL,
    -- Identifies the analysis holding the claim, so that only it releases it.
    holder        uuid        NOT NULL,
    claimed_until timestamptz NOT NULL,
    PRIMARY KEY (cluster, workload_key)
);

-- One row per guard decision, with every reason.
CREATE TABLE decisions (
    proposal_id    uuid        PRIMARY KEY,
    correlation_id uuid        NOT NULL,
    cluster        text        NOT NULL,
    verdict        text        NOT NULL CHECK (verdict IN ('approved', 'rejected', 'pending')),
    reasons        text[]      NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    -- The encoded `approved`, `rejected` or `pending` event.
    event          bytea       NOT NULL,
    -- Who settled a pending proposal, and when ('timeout' when no one did).
    resolved_by    text,
    resolved_at    timestamptz,
    -- A settled pending proposal whose event is not published yet; set
    -- back to false once it is, so a failed publish is retried.
    unpublished    boolean     NOT NULL DEFAULT false
);
CREATE INDEX decisions_pending ON decisions (decided_at) WHERE verdict = 'pending';
CREATE INDEX decisions_unpublished ON decisions (proposal_id) WHERE unpublished;

-- The action history: one row per approved action, updated by execute.
-- Its id is the proposal id.
CREATE TABLE actions (
    action_id         uuid        PRIMARY KEY REFERENCES decisions (proposal_id),
    correlation_id    uuid        NOT NULL,
    cluster           text        NOT NULL,
    namespace         text        NOT NULL,
    target_kind       text        NOT NULL,
    target_name       text        NOT NULL,
    action            text        NOT NULL,
    parameters        jsonb       NOT NULL,
    confidence        double precision NOT NULL,
    status            text        NOT NULL DEFAULT 'approved'
                      CHECK (status IN ('approved', 'executing', 'succeeded', 'failed', 'skipped')),
    mode              text        CHECK (mode IN ('dry_run', 'live')),
    changes           text[]      NOT NULL DEFAULT '{}',
    -- Evidence the action collected (diagnostics); null when none.
    details           jsonb       NOT NULL DEFAULT 'null',
    -- Whether the action had its effect (a finished rollout); null when it
    -- was not checked.
    effective         boolean,
    verification      text        NOT NULL DEFAULT '',
    error             text        NOT NULL DEFAULT '',
    attempts          integer     NOT NULL DEFAULT 0,
    approved_at       timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    -- While an attempt runs it holds the action until this time and
    -- extends it; a second delivery waits for it to pass, so one action
    -- never runs twice at once, and a crashed attempt's claim expires.
    claimed_until     timestamptz,
    finished_at       timestamptz,
    alert_resolved_at timestamptz,
    -- The encoded `executed` event, once there is one.
    executed_event    bytea
);
-- The guard's cooldown lookup: the latest same action on the same target.
CREATE INDEX actions_target_recent
    ON actions (cluster, namespace, target_kind, target_name, action, approved_at DESC);
CREATE INDEX actions_correlation ON actions (correlation_id);

-- Messages that a consumer gave up on, kept for an operator.
CREATE TABLE dead_letters (
    id              bigserial   PRIMARY KEY,
    stream          text        NOT NULL,
    consumer        text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    subject         text        NOT NULL,
    deliveries      bigint      NOT NULL,
    reason          text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
-- A message recorded twice (two replicas, or a retry) keeps one row; a
-- recreated stream reuses sequence numbers, so the content is part of
-- the key.
CREATE UNIQUE INDEX dead_letters_message
    ON dead_letters (stream, consumer, stream_sequence, sha256(payload));
