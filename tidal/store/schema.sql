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

create or replace function match_documents(
    query_embedding vector(__DIMENSION__),
    match_count integer default null,
    filter jsonb default '{}'
) returns table (id uuid, content text, metadata jsonb, similarity float)
language sql stable
as $$
    select d.id, d.content, d.metadata, 1 - (d.embedding <=> query_embedding) as similarity
    from documents d
    where d.metadata @> filter
    order by d.embedding <=> query_embedding
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
