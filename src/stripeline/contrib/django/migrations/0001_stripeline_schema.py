"""stripeline's tables, by stripeline's own (Alembic) migrations.

``manage.py migrate`` runs this on the database being migrated (the test
database too, under Django's test runner): ``stripeline.db.migrate`` brings
stripeline's schema to its newest revision, on Django's connection. A later
stripeline release adds a Django migration of the same shape, so upgrading the
package and running ``migrate`` is all there is.

Reverse (``migrate stripeline zero``) does nothing: stripeline's tables hold
the inbox and the mirror, and are not dropped behind your back. Drop them by
hand if you mean it (the tables named ``stripeline_*``).

Not atomic: stripeline's migrations begin and commit their own transaction,
which cannot happen inside Django's.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def upgrade(apps: Any, schema_editor: Any) -> None:
    from stripeline.contrib.django.conf import database_url
    from stripeline.contrib.django.engine import django_engine
    from stripeline.db import migrate

    alias = schema_editor.connection.alias
    engine = django_engine(database_url(alias), alias)
    try:
        migrate(engine)
    finally:
        engine.dispose()


class Migration(migrations.Migration):
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(upgrade, migrations.RunPython.noop, elidable=False)]
