"""SQLite schema as numbered migrations, applied in order and recorded in PRAGMA user_version."""

MIGRATIONS: tuple[str, ...] = (
    # 1: flows, versions, runs, task instances, rejected messages
    """
    CREATE TABLE flows (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        registered_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE flow_versions (
        flow TEXT NOT NULL,
        version TEXT NOT NULL,
        spec BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (flow, version)
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        params BLOB NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        idempotency_key TEXT,
        source TEXT NOT NULL,
        counts BLOB NOT NULL
    );
    CREATE INDEX runs_by_flow ON runs (flow, created_at);
    CREATE INDEX runs_by_status ON runs (status, created_at);
    CREATE INDEX runs_by_created ON runs (created_at);
    CREATE UNIQUE INDEX runs_by_key ON runs (flow, idempotency_key);
    CREATE TABLE task_instances (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        queue TEXT NOT NULL,
        agent_id TEXT,
        queued_at REAL,
        started_at REAL,
        finished_at REAL,
        output BLOB,
        error_type TEXT,
        error_message TEXT,
        traceback TEXT,
        checkpoint TEXT,
        checkpoint_at REAL,
        progress REAL,
        retry_at REAL,
        note TEXT,
        PRIMARY KEY (run_id, task)
    ) WITHOUT ROWID;
    CREATE TABLE rejected (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subject TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        raw BLOB NOT NULL,
        received_at REAL NOT NULL
    );
    """,
    # 2: partial runs remember which tasks they ran
    """
    ALTER TABLE runs ADD COLUMN only_tasks BLOB;
    """,
    # 3: every attempt of a task kept; the coordinator's backstop deadline
    """
    ALTER TABLE task_instances ADD COLUMN history BLOB;
    ALTER TABLE task_instances ADD COLUMN deadline_at REAL;
    ALTER TABLE task_instances ADD COLUMN dispatch INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the end of each task instance's log
    """
    CREATE TABLE task_logs (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        log TEXT NOT NULL,
        PRIMARY KEY (run_id, task)
    ) WITHOUT ROWID;
    """,
    # 5: schedules, each nominal time they dealt with, and the runs they started
    """
    ALTER TABLE runs ADD COLUMN schedule TEXT;
    ALTER TABLE runs ADD COLUMN scheduled_for REAL;
    CREATE INDEX runs_of_schedule ON runs (schedule, status) WHERE schedule IS NOT NULL;
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        spec BLOB NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        note TEXT,
        cursor REAL NOT NULL,
        origin TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE schedule_fires (
        schedule TEXT NOT NULL,
        nominal REAL NOT NULL,
        last_nominal REAL NOT NULL,
        count INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        run_id TEXT,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (schedule, nominal)
    ) WITHOUT ROWID;
    """,
    # 6: batches, their items (waiting ones stay here until they start), runs of batches
    """
    ALTER TABLE runs ADD COLUMN batch TEXT;
    CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY,
        name TEXT,
        flow TEXT NOT NULL,
        state TEXT NOT NULL,
        record BLOB NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX batches_by_name ON batches (name, created_at);
    CREATE TABLE batch_items (
        batch_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        item_key TEXT NOT NULL,
        params BLOB NOT NULL,
        scheduled_for REAL,
        status TEXT NOT NULL,
        run_id TEXT,
        reason TEXT,
        PRIMARY KEY (batch_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX batch_items_by_key ON batch_items (item_key);
    CREATE INDEX batch_items_by_run ON batch_items (run_id) WHERE run_id IS NOT NULL;
    CREATE INDEX batch_items_by_status ON batch_items (batch_id, status, seq);
    """,
    # 7: an item's last run, and its repeats in its own batch, found without reading every
    # earlier item of its key (a daily resubmit would read them all)
    """
    DROP INDEX batch_items_by_key;
    CREATE INDEX batch_items_by_key ON batch_items (item_key, batch_id, seq);
    CREATE INDEX batch_items_ran ON batch_items (item_key, run_id) WHERE run_id IS NOT NULL;
    """,
    # 8: the instances of mapped tasks (``T~3``), apart from the runs' own tasks
    """
    CREATE TABLE map_instances (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        queue TEXT NOT NULL,
        agent_id TEXT,
        queued_at REAL,
        started_at REAL,
        finished_at REAL,
        output BLOB,
        error_type TEXT,
        error_message TEXT,
        traceback TEXT,
        checkpoint TEXT,
        checkpoint_at REAL,
        progress REAL,
        retry_at REAL,
        note TEXT,
        history BLOB,
        deadline_at REAL,
        dispatch INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, task)
    ) WITHOUT ROWID;
    """,
    # 9: the items generator tasks yielded (a mapped task downstream maps over them)
    """
    CREATE TABLE map_items (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        idx INTEGER NOT NULL,
        item BLOB NOT NULL,
        PRIMARY KEY (run_id, task, idx)
    ) WITHOUT ROWID;
    """,
    # 10: an instance is its task and its index (the key orders a task's instances by index,
    # so a page of them is read in order and stops where it ends, however many there are)
    """
    CREATE TABLE map_instances_by_index (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        idx INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        queue TEXT NOT NULL,
        agent_id TEXT,
        queued_at REAL,
        started_at REAL,
        finished_at REAL,
        output BLOB,
        error_type TEXT,
        error_message TEXT,
        traceback TEXT,
        checkpoint TEXT,
        checkpoint_at REAL,
        progress REAL,
        retry_at REAL,
        note TEXT,
        history BLOB,
        deadline_at REAL,
        dispatch INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, task, idx)
    ) WITHOUT ROWID;
    INSERT INTO map_instances_by_index (run_id, task, idx,
        status, attempt, queue, agent_id, queued_at, started_at,
        finished_at, output, error_type, error_message, traceback, checkpoint, checkpoint_at,
        progress, retry_at, note, history, deadline_at, dispatch)
        SELECT run_id, substr(task, 1, instr(task, '~') - 1),
               CAST(substr(task, instr(task, '~') + 1) AS INTEGER),
        status, attempt, queue, agent_id, queued_at, started_at,
        finished_at, output, error_type, error_message, traceback, checkpoint, checkpoint_at,
        progress, retry_at, note, history, deadline_at, dispatch
        FROM map_instances;
    DROP TABLE map_instances;
    ALTER TABLE map_instances_by_index RENAME TO map_instances;
    """,
    # 11: child tasks spawned from inside running tasks (``train/0``): each one's spawn,
    # written once, and its state, keyed by its parent and spawn number so a parent's
    # children are read in order
    """
    CREATE TABLE child_specs (
        run_id TEXT NOT NULL,
        parent TEXT NOT NULL,
        seq INTEGER NOT NULL,
        function TEXT NOT NULL,
        spawn BLOB NOT NULL,
        ident INTEGER NOT NULL,
        PRIMARY KEY (run_id, parent, seq)
    ) WITHOUT ROWID;
    CREATE TABLE child_tasks (
        run_id TEXT NOT NULL,
        parent TEXT NOT NULL,
        seq INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        queue TEXT NOT NULL,
        agent_id TEXT,
        queued_at REAL,
        started_at REAL,
        finished_at REAL,
        output BLOB,
        error_type TEXT,
        error_message TEXT,
        traceback TEXT,
        checkpoint TEXT,
        checkpoint_at REAL,
        progress REAL,
        retry_at REAL,
        note TEXT,
        history BLOB,
        deadline_at REAL,
        dispatch INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, parent, seq)
    ) WITHOUT ROWID;
    """,
    # 12: concurrency limits and priorities: a task held back by a limit, a run's priority
    # and why it waits, and the limits set over the API (``queue:<name>``)
    """
    ALTER TABLE task_instances ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE map_instances ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE child_tasks ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN note TEXT;
    CREATE TABLE limits (
        name TEXT PRIMARY KEY,
        slots INTEGER NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 13: experiments: what tasks log (ctx.log_metric, log_result, log_artifact), kept for
    # every attempt; and each run's final value of each metric (the latest attempt's value at
    # its highest step), kept up to date as points arrive, for the experiments table by flow
    """
    CREATE TABLE metric_points (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, task, attempt, name, step)
    ) WITHOUT ROWID;
    CREATE TABLE experiment_results (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        params BLOB NOT NULL,
        metrics BLOB NOT NULL,
        artifact TEXT,
        metadata BLOB NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, task, attempt, seq)
    ) WITHOUT ROWID;
    CREATE TABLE artifacts (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        uri TEXT NOT NULL,
        kind TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, task, attempt, seq)
    ) WITHOUT ROWID;
    CREATE TABLE run_metrics (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        flow TEXT NOT NULL,
        value REAL NOT NULL,
        step INTEGER NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX run_metrics_by_flow ON run_metrics (flow, name, value);
    """,
    # 14: reads that an index of their own keeps from walking a growing table (SQLite plans
    # without statistics): a flow's runs in one state, newest first (``runs list --flow F
    # --status S`` walked every run in that state); a schedule's fires of one outcome (a
    # restart read every fire of each schedule to find those still buffered)
    """
    CREATE INDEX runs_by_flow_status ON runs (flow, status, created_at);
    CREATE INDEX schedule_fires_by_outcome ON schedule_fires (schedule, outcome, nominal);
    """,
)
