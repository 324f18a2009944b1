-- The guard's oscillation detectors: functions over the action history
-- that each return at most one finding with a severity ('warning' or
-- 'block'), a sentence for people and the ids of the actions that are the
-- evidence. The guard calls them inside its decision transaction, under
-- the target's advisory lock. A proposal still being decided counts as the
-- newest entry of the history.

CREATE TYPE steward_finding AS (
    detector text,
    severity text,
    detail   text,
    evidence uuid[]
);

-- Renders an interval the way people write it: 45m, 2h, 1h30m.
CREATE FUNCTION steward_span(value interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN extract(epoch FROM value) >= 3600 AND extract(epoch FROM value)::bigint % 3600 = 0
            THEN (extract(epoch FROM value)::bigint / 3600)::text || 'h'
        WHEN extract(epoch FROM value) >= 3600
            THEN (extract(epoch FROM value)::bigint / 3600)::text || 'h'
                 || ((extract(epoch FROM value)::bigint % 3600) / 60)::text || 'm'
        ELSE (extract(epoch FROM value)::bigint / 60)::text || 'm'
    END
$$;

-- Scale oscillation: the replica count of scale actions on one target
-- changes direction `min_changes` times or more within `window`. One
-- change less is a warning.
CREATE FUNCTION steward_scale_oscillation(
    p_cluster text, p_namespace text, p_kind text, p_name text,
    p_candidate_replicas integer, p_window interval, p_min_changes integer
) RETURNS SETOF steward_finding
LANGUAGE sql STABLE AS $$
    WITH history AS (
        SELECT action_id, approved_at, (parameters->>'replicas')::integer AS replicas
        FROM actions
        WHERE cluster = p_cluster AND namespace = p_namespace
          AND target_kind = p_kind AND target_name = p_name
          AND action IN ('scale_deployment', 'scale_statefulset')
          AND status NOT IN ('failed', 'skipped')
          AND approved_at >= now() - p_window
        UNION ALL
        SELECT NULL, now(), p_candidate_replicas WHERE p_candidate_replicas IS NOT NULL
    ), steps AS (
        SELECT action_id, approved_at,
               sign(replicas - lag(replicas) OVER (ORDER BY approved_at)) AS direction
        FROM history
    ), turns AS (
        SELECT action_id, direction,
               lag(direction) OVER (ORDER BY approved_at) AS previous
        FROM steps
        WHERE direction IS NOT NULL AND direction <> 0
    ), counted AS (
        SELECT count(*) FILTER (WHERE previous IS NOT NULL AND direction <> previous) AS changes,
               (SELECT array_agg(action_id ORDER BY approved_at) FROM history WHERE action_id IS NOT NULL) AS evidence
        FROM turns
    )
    SELECT ROW(
        'scale_oscillation',
        CASE WHEN changes >= p_min_changes THEN 'block' ELSE 'warning' END,
        format('scale oscillation: %s direction changes in %s', changes, steward_span(p_window)),
        evidence
    )::steward_finding
    FROM counted
    WHERE changes >= greatest(p_min_changes - 1, 1)
$$;

-- Resource thrashing: increase_resources and a scale action alternate on
-- one target within `window`, `min_alternations` times or more.
CREATE FUNCTION steward_resource_thrashing(
    p_cluster text, p_namespace text, p_kind text, p_name text,
    p_candidate_action text, p_window interval, p_min_alternations integer
) RETURNS SETOF steward_finding
LANGUAGE sql STABLE AS $$
    WITH history AS (
        SELECT action_id, approved_at,
               CASE WHEN action = 'increase_resources' THEN 'resources' ELSE 'scale' END AS class
        FROM actions
        WHERE cluster = p_cluster AND namespace = p_namespace
          AND target_kind = p_kind AND target_name = p_name
          AND action IN ('increase_resources', 'scale_deployment', 'scale_statefulset')
          AND status NOT IN ('failed', 'skipped')
          AND approved_at >= now() - p_window
        UNION ALL
        SELECT NULL, now(),
               CASE WHEN p_candidate_action = 'increase_resources' THEN 'resources' ELSE 'scale' END
        WHERE p_candidate_action IN ('increase_resources', 'scale_deployment', 'scale_statefulset')
    ), switches AS (
        SELECT action_id, approved_at, class <> lag(class) OVER (ORDER BY approved_at) AS switched
        FROM history
    ), counted AS (
        SELECT count(*) FILTER (WHERE switched) AS alternations,
               (SELECT array_agg(action_id ORDER BY approved_at) FROM history WHERE action_id IS NOT NULL) AS evidence
        FROM switches
    )
    SELECT ROW(
        'resource_thrashing',
        CASE WHEN alternations >= p_min_alternations THEN 'block' ELSE 'warning' END,
        format('resource thrashing: increase_resources and scaling alternated %s times in %s',
               alternations, steward_span(p_window)),
        evidence
    )::steward_finding
    FROM counted
    WHERE alternations >= greatest(p_min_alternations - 1, 1)
$$;

-- Ineffective loop: the same action on the same target, repeated within
-- `window`, did not help: its effect check failed, or its alert did not
-- resolve within `settle` after it finished. Only actions that finished
-- more than `settle` ago are judged, because alerts keep firing for a
-- while after a fix. `min_repeats` ineffective ones block a further one.
-- Dry runs change nothing, so only live runs are judged.
CREATE FUNCTION steward_ineffective_loop(
    p_cluster text, p_namespace text, p_kind text, p_name text, p_action text,
    p_window interval, p_min_repeats integer, p_settle interval
) RETURNS SETOF steward_finding
LANGUAGE sql STABLE AS $$
    WITH judged AS (
        SELECT action_id, approved_at
        FROM actions
        WHERE cluster = p_cluster AND namespace = p_namespace
          AND target_kind = p_kind AND target_name = p_name AND action = p_action
          AND status = 'succeeded' AND mode = 'live'
          AND approved_at >= now() - p_window
          AND finished_at < now() - p_settle
          AND (effective IS FALSE
               OR alert_resolved_at IS NULL
               OR alert_resolved_at > finished_at + p_settle)
    ), counted AS (
        SELECT count(*) AS repeats, array_agg(action_id ORDER BY approved_at) AS evidence FROM judged
    )
    SELECT ROW(
        'ineffective_loop',
        CASE WHEN repeats >= p_min_repeats THEN 'block' ELSE 'warning' END,
        format('ineffective loop: %s ran %s times in %s without resolving its alert',
               p_action, repeats, steward_span(p_window)),
        evidence
    )::steward_finding
    FROM counted
    WHERE repeats >= greatest(p_min_repeats - 1, 1)
$$;

-- Cascading failure: after actions in a namespace finished within
-- `window`, alerts with other names began firing there: `min_new_alerts`
-- distinct new alert names block further actions in the namespace. Only
-- live actions count, because a dry run cannot have caused anything.
CREATE FUNCTION steward_cascading_failure(
    p_cluster text, p_namespace text, p_window interval, p_min_new_alerts integer
) RETURNS SETOF steward_finding
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    -- EXECUTE plans the query with the window's value, so the planner
    -- reads only the namespace's recent actions through the index on
    -- finished_at. Planned without it, as a LANGUAGE sql body is, it
    -- scanned every action of the namespace.
    RETURN QUERY EXECUTE $query$
        WITH recent AS (
            SELECT a.action_id, a.finished_at, coalesce(an.alertname, '') AS alertname
            FROM actions a
            LEFT JOIN analyses an ON an.proposal_id = a.action_id
            WHERE a.cluster = $1 AND a.namespace = $2
              AND a.status = 'succeeded' AND a.mode = 'live' AND a.action <> 'notify_only'
              AND a.finished_at >= now() - $3
        ), new_alerts AS (
            SELECT DISTINCT i.alertname
            FROM alert_instances i
            JOIN recent r ON i.first_seen_at > r.finished_at AND i.alertname <> r.alertname
            WHERE i.cluster = $1 AND i.status = 'firing'
              AND i.labels->>'namespace' = $2
        ), counted AS (
            SELECT (SELECT count(*) FROM new_alerts) AS alerts,
                   (SELECT string_agg(alertname, ', ' ORDER BY alertname) FROM new_alerts) AS names,
                   (SELECT array_agg(action_id ORDER BY finished_at) FROM recent) AS evidence
        )
        SELECT (ROW(
            'cascading_failure',
            CASE WHEN alerts >= $4 THEN 'block' ELSE 'warning' END,
            format('cascading failure: %s new alerts (%s) in namespace %s after actions there in the last %s',
                   alerts, names, $2, steward_span($3)),
            evidence
        )::steward_finding).*
        FROM counted
        WHERE alerts >= greatest($4 - 1, 1)
    $query$ USING p_cluster, p_namespace, p_window, p_min_new_alerts;
END
$fn$;

-- Consecutive failures: the last `threshold` runs of an action on a target
-- all failed, the latest within `block_for`.
CREATE FUNCTION steward_consecutive_failures(
    p_cluster text, p_namespace text, p_kind text, p_name text, p_action text,
    p_threshold integer, p_block_for interval
) RETURNS SETOF steward_finding
LANGUAGE sql STABLE AS $$
    WITH latest AS (
        SELECT action_id, status, approved_at
        FROM actions
        WHERE cluster = p_cluster AND namespace = p_namespace
          AND target_kind = p_kind AND target_name = p_name AND action = p_action
          AND status IN ('succeeded', 'failed')
        ORDER BY approved_at DESC
        LIMIT p_threshold
    ), counted AS (
        SELECT count(*) FILTER (WHERE status = 'failed') AS failures,
               count(*) AS runs,
               max(approved_at) AS newest,
               array_agg(action_id ORDER BY approved_at) AS evidence
        FROM latest
    )
    SELECT ROW(
        'consecutive_failures',
        'block',
        format('consecutive failures: the last %s runs of %s failed; blocked for %s after the latest',
               failures, p_action, steward_span(p_block_for)),
        evidence
    )::steward_finding
    FROM counted
    WHERE failures = p_threshold AND runs = p_threshold AND newest >= now() - p_block_for
$$;

-- The guard's index for the detectors: every action on one target, newest
-- first. actions_target_recent serves lookups of one action.
CREATE INDEX actions_target_history
    ON actions (cluster, namespace, target_kind, target_name, approved_at DESC);
CREATE INDEX actions_namespace_finished
    ON actions (cluster, namespace, finished_at DESC);
-- The guard's rate limits: approvals per cluster and per namespace.
CREATE INDEX actions_cluster_approved ON actions (cluster, approved_at DESC);
CREATE INDEX actions_namespace_approved ON actions (cluster, namespace, approved_at DESC);
CREATE INDEX alert_instances_namespace_seen
    ON alert_instances (cluster, (labels->>'namespace'), first_seen_at DESC);
