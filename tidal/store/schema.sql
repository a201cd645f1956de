-- Tidal's schema, applied idempotently at start-up and by `tidal db init`. The vector size comes
-- from the embedder; `tidal db sql --dimension N` prints this file ready to run.
-- `documents` and `match_documents` follow LangChain's SupabaseVectorStore, so its readers work
-- unchanged; `source`, `source_path`, `chunk_index` and `chunk_hash` tie each row to its file.
-- A file is its source (`supabase://<bucket>`, or a folder) and its path: two buckets, or a
-- bucket and a folder, share one index without ever touching each other's files.

create extension if not exists vector;

create table if not exists documents (
    id          uuid primary key,
    content     text not null,
    metadata    jsonb not null default '{}'::jsonb,
    embedding   vector(__DIMENSION__) not null,
    source_path text not null,
    chunk_index integer not null,
    chunk_hash  text not null,
    embedder    text,
    source      text not null default '',
    constraint documents_source_file_chunk_key unique (source, source_path, chunk_index)
);
-- Added after the first release; tables made before it gain the column here.
alter table documents add column if not exists embedder text;

-- The vector index. Tidal's runs build it themselves (PostgresStore.build_vector_index): a run
-- that writes more than the index already holds drops it and builds it once at the end.
create index if not exists documents_embedding_idx
    on documents using hnsw (embedding vector_cosine_ops);
-- The embedding cache: a chunk whose text (hash) and model are already stored is not re-embedded.
create index if not exists documents_chunk_cache_idx on documents (chunk_hash, embedder);

create table if not exists ingested_files (
    source       text not null default '',
    path         text not null,
    content_hash text not null,
    fingerprint  text not null,
    chunk_count  integer not null default 0,
    token_count  integer not null default 0,
    status       text not null check (status in ('ingested', 'failed')),
    error        text,
    error_kind   text,
    attempts     integer not null default 1,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (source, path)
);

-- Vectors bought but not yet written with their file: kept as each embedding batch returns, so
-- a crash or a retry re-buys only the batch in flight. A file's write removes its rows here.
create table if not exists embedding_cache (
    chunk_hash text not null,
    embedder   text not null,
    embedding  vector(__DIMENSION__) not null,
    created_at timestamptz not null default now(),
    primary key (chunk_hash, embedder)
);

-- Files being worked on: a row per file in flight, naming the store that holds it. A holder is
-- alive while it holds its presence lock (an advisory lock keyed by its id, on a connection of
-- its own), so a killed worker's files are free the moment Postgres sees its connection drop,
-- and a file in flight holds no connection while it waits for its embeddings.
create table if not exists file_claims (
    source     text not null default '',
    path       text not null,
    holder     uuid not null,
    claimed_at timestamptz not null default now(),
    primary key (source, path)
);

-- The run ledger: a row per finished run (a dry run is not a run), so anyone reading the index
-- can tell how fresh it is, and `tidal status` answers without Prefect.
create table if not exists ingest_runs (
    id            bigint generated always as identity primary key,
    started_at    timestamptz not null,
    finished_at   timestamptz not null,
    source        text not null,
    outcome       text not null,
    counts        jsonb not null,
    chunks        integer not null,
    tokens        integer not null,
    deleted       integer not null,
    seconds       double precision not null,
    message       text,
    flow_run_id   text,
    flow_run_name text
);

-- Indexes made before files knew their source: key them by source and path, in place. Their
-- rows keep source '' until a run adopts them: all at once here when the ledger names a single
-- source, else each file when its source lists it (PostgresStore.adopt).
alter table documents add column if not exists source text not null default '';
alter table ingested_files add column if not exists source text not null default '';
alter table file_claims add column if not exists source text not null default '';
do $$
declare
    only_source text;
begin
    if exists (select 1 from pg_constraint where conname = 'documents_source_path_chunk_index_key')
    then
        alter table documents drop constraint documents_source_path_chunk_index_key;
        alter table documents add constraint documents_source_file_chunk_key
            unique (source, source_path, chunk_index);
    end if;
    if (select array_length(conkey, 1) from pg_constraint where conname = 'ingested_files_pkey') = 1
    then
        alter table ingested_files drop constraint ingested_files_pkey;
        alter table ingested_files add primary key (source, path);
    end if;
    if (select array_length(conkey, 1) from pg_constraint where conname = 'file_claims_pkey') = 1
    then
        alter table file_claims drop constraint file_claims_pkey;
        alter table file_claims add primary key (source, path);
    end if;
    if exists (select 1 from ingested_files where source = '') then
        select min(identity) into only_source from (
            select distinct case when source like 'supabase://%'
                then 'supabase://' || split_part(substr(source, 12), '/', 1)
                else source end as identity
            from ingest_runs
        ) ledger having count(*) = 1;
        if only_source is not null then
            update ingested_files set source = only_source where source = '';
            update documents set source = only_source where source = '';
        end if;
    end if;
end $$;

-- Full-text search beside the vectors (Supabase's hybrid-search recipe): a generated tsvector
-- over the content, English stemming, with its GIN index. Added to a table of an older release
-- here too (Postgres fills the column for every row once).
alter table documents add column if not exists fts tsvector
    generated always as (to_tsvector('english', content)) stored;
create index if not exists documents_fts_idx on documents using gin (fts);

-- The searches. An HNSW scan yields at most `hnsw.ef_search` rows (40 by default), and a filter
-- is applied after it, so a plain `order by embedding <=> q limit k where ...` can return fewer
-- than k rows, or none. `match_documents` raises `ef_search` to k for its own transaction; on
-- pgvector 0.8+ it scans iteratively (`hnsw.iterative_scan`) until k rows pass the filter; and
-- when the index still comes back short (a selective filter on pgvector < 0.8, a k above
-- pgvector's 1000, `hnsw.max_scan_tuples` reached), it ranks every matching row exactly. So it
-- returns min(k, matching rows). `path_prefix` keeps the files under a folder
-- ('designs/<team>/' is a team's). The settings it changes are put back before it returns.
-- Released with (query_embedding, match_count, filter): that signature gives way to this one.
drop function if exists match_documents(vector, integer, jsonb);
create or replace function match_documents(
    query_embedding vector(__DIMENSION__),
    match_count integer default null,
    filter jsonb default '{}',
    path_prefix text default null
) returns table (id uuid, content text, metadata jsonb, similarity float)
language plpgsql stable
-- Planned for each call's own filter: a plan made once for any filter (Postgres' generic plan,
-- after five calls) would guess its selectivity and could rank every row exactly for every k.
set plan_cache_mode = force_custom_plan
as $$
declare
    nearest uuid[];
    ef_search text := current_setting('hnsw.ef_search', true);
    iterative_scan text := current_setting('hnsw.iterative_scan', true);
begin
    if query_embedding is null or match_count <= 0 then
        return;
    end if;
    if match_count is not null then
        perform set_config('hnsw.ef_search',
            least(greatest(match_count, coalesce(ef_search, '40')::integer), 1000)::text, true);
        if (select (regexp_match(extversion, '^(\d+)\.(\d+)'))::integer[] >= '{0,8}'
            from pg_extension where extname = 'vector') then
            perform set_config('hnsw.iterative_scan', 'relaxed_order', true);
        end if;
        select array_agg(n.id order by n.distance) into nearest
        from (
            select d.id, d.embedding <=> query_embedding as distance
            from documents d
            where d.metadata @> filter
              and (path_prefix is null or starts_with(d.source_path, path_prefix))
            order by d.embedding <=> query_embedding
            limit match_count
        ) n;
        perform set_config('hnsw.ef_search', ef_search, true) where ef_search is not null;
        perform set_config('hnsw.iterative_scan', iterative_scan, true)
            where iterative_scan is not null;
        if coalesce(cardinality(nearest), 0) >= match_count then
            return query
                select d.id, d.content, d.metadata, 1 - (d.embedding <=> query_embedding)
                from documents d
                where d.id = any(nearest)
                order by array_position(nearest, d.id);
            return;
        end if;
        raise debug 'match_documents: the index found % of % rows; ranking every match exactly',
            coalesce(cardinality(nearest), 0), match_count;
    end if;
    -- Exact: the distance of every matching row (a materialized CTE keeps the index out).
    return query
        with matching as materialized (
            select d.id, d.content, d.metadata, d.embedding <=> query_embedding as distance
            from documents d
            where d.metadata @> filter
              and (path_prefix is null or starts_with(d.source_path, path_prefix))
        )
        select m.id, m.content, m.metadata, 1 - m.distance
        from matching m
        order by m.distance
        limit match_count;
end;
$$;

-- An older release's hybrid_search, without full_text_min_share: it would stay beside the new
-- one as an overload, and a call with its eight arguments would match both.
drop function if exists hybrid_search(text, vector, integer, float, float, integer, jsonb, text);

-- Hybrid search, the shape of Supabase's guide: a full-text ranking and the nearest vectors
-- (`match_documents`, so any k and any filter hold), fused by reciprocal rank: score =
-- full_text_weight / (rrf_k + text rank) + semantic_weight / (rrf_k + vector rank), each list
-- 2 * match_count long. Unlike the guide, the full-text side does not require every word of
-- the question in one chunk (a question asked as a sentence rarely has them all in one): a
-- chunk qualifies when the words it holds carry at least `full_text_min_share` of the
-- question's weight, each word weighing its rarity (BM25's inverse document frequency, over
-- the stemmed lexemes; words the index lacks weigh nothing), like a search engine's "minimum
-- should match". Chunks rank by the weight they hold; chunks holding the same words (a
-- boilerplate paragraph in several files) by their vector's distance to the query, then by how
-- often they hold them, so a tie is settled by meaning and never by row id. match_count is not capped at 30, and `filter` and `path_prefix` work as in
-- match_documents. A null query_embedding (or semantic_weight 0) ranks by full text alone; a
-- null query_text, by vectors alone.
create or replace function hybrid_search(
    query_text text,
    query_embedding vector(__DIMENSION__),
    match_count integer,
    full_text_weight float default 1,
    semantic_weight float default 1,
    rrf_k integer default 50,
    filter jsonb default '{}',
    path_prefix text default null,
    full_text_min_share float default 0.6
) returns table (id uuid, content text, metadata jsonb, similarity float, text_rank float,
                 score float)
language sql stable
as $$
    with words as (  -- the question's distinct lexemes; a few dozen at most bound the work
        select w.lexeme, quote_literal(w.lexeme)::tsquery as query
        from unnest(tsvector_to_array(to_tsvector('english', coalesce(query_text, ''))))
            as w (lexeme)
        where full_text_weight > 0
        limit 64
    ),
    size as (  -- the planner's row count, exact when the table was never analyzed
        select coalesce(
            nullif(greatest(
                (select reltuples from pg_class where oid = 'documents'::regclass), 0), 0),
            (select count(*) from documents)
        )::float as chunks
    ),
    terms as (  -- the words the index holds, each with its weight
        select w.query,
            ln(1 + (greatest(size.chunks, f.n) - f.n + 0.5) / (f.n + 0.5)) as idf
        from words w
        cross join size
        cross join lateral (
            select count(*)::float as n from documents d where d.fts @@ w.query
        ) as f
        where f.n > 0
    ),
    full_text as (
        select d.id, sum(t.idf) as text_rank,
            row_number() over (
                order by sum(t.idf) desc, min(d.embedding <=> query_embedding),
                    sum(ts_rank(d.fts, t.query)) desc, d.id
            ) as rank_ix
        from documents d
        join terms t on d.fts @@ t.query
        where d.metadata @> filter
          and (path_prefix is null or starts_with(d.source_path, path_prefix))
        group by d.id
        having sum(t.idf) >= full_text_min_share * (select sum(idf) from terms)
        order by rank_ix
        limit match_count * 2
    ),
    semantic as (
        select m.id, m.rank_ix
        from match_documents(
            query_embedding,
            case when semantic_weight > 0 then match_count * 2 else 0 end,
            filter,
            path_prefix
        ) with ordinality as m (id, content, metadata, similarity, rank_ix)
    )
    select d.id, d.content, d.metadata,
        1 - (d.embedding <=> query_embedding),
        full_text.text_rank,
        coalesce(full_text_weight / (rrf_k + full_text.rank_ix), 0.0)
            + coalesce(semantic_weight / (rrf_k + semantic.rank_ix), 0.0) as score
    from full_text
    full outer join semantic on full_text.id = semantic.id
    join documents d on d.id = coalesce(full_text.id, semantic.id)
    -- A tie (often at the top: each ranking's first, which the other did not find) goes to
    -- the full-text match, the rarer and more literal of the two.
    order by score desc, full_text.rank_ix nulls last, semantic.rank_ix nulls last, d.id
    limit match_count;
$$;

-- Row level security with no policies: through Supabase's Data API the anon and authenticated
-- roles read and write nothing. Tidal connects as the table owner (or service role), which
-- bypasses RLS. Harmless on a plain Postgres.
alter table documents enable row level security;
alter table ingested_files enable row level security;
alter table embedding_cache enable row level security;
alter table ingest_runs enable row level security;
alter table file_claims enable row level security;
