-- The benchmark table: 15 columns, 1,000,000 rows.
drop table if exists accounts cascade;
create table accounts (
    id bigint primary key,
    name text not null,
    email text not null,
    status text not null,
    balance numeric(12, 2) not null,
    country text not null,
    city text not null,
    street text not null,
    zip text not null,
    phone text not null,
    score integer not null,
    notes text,
    tags text[],
    created_at timestamptz not null,
    updated_at timestamptz not null
);
insert into accounts
select i,
       'user ' || i,
       'user' || i || '@example.com',
       'active',
       (i % 100000) / 100.0,
       'DE',
       'Berlin',
       i || ' Example Street',
       lpad((i % 99999)::text, 5, '0'),
       '+49 30 ' || lpad(i::text, 8, '0'),
       i % 1000,
       'first note',
       array['a', 'b'],
       now() - interval '1 year',
       now() - interval '1 year'
from generate_series(1, 1000000) as i;
vacuum analyze accounts;
