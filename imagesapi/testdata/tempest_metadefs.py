"""Run Tempest's own metadefs tests against an endpoint, without Keystone.

Tempest's test methods (tempest/api/image/v2/test_images_metadefs_schema.py
and admin/test_images_metadefs_*.py) run as they are, with Tempest's own
clients (tempest/lib/services/image/v2); only the authentication is
replaced: every request carries the noauth headers of an admin (X-Roles:
admin, X-Tenant-Id: adminproject) instead of a Keystone token. Setup and
resource_setup are not run (they read tempest.conf and credentials); the
cleanups the tests register are.

Usage: python3 tempest_metadefs.py http://127.0.0.1:PORT
Prints PASS/FAIL per test, then "passed N failed M"; exits 1 on a failure.
"""
import sys
import traceback
import unittest

from tempest.api.image.v2 import test_images_metadefs_schema as schema
from tempest.api.image.v2.admin import test_images_metadefs_namespace_objects as objects
from tempest.api.image.v2.admin import test_images_metadefs_namespace_properties as properties
from tempest.api.image.v2.admin import test_images_metadefs_namespace_tags as tags
from tempest.api.image.v2.admin import test_images_metadefs_namespaces as namespaces
from tempest.api.image.v2.admin import test_images_metadefs_resource_types as resource_types
from tempest.lib.services.image.v2 import namespace_objects_client
from tempest.lib.services.image.v2 import namespace_properties_client
from tempest.lib.services.image.v2 import namespace_tags_client
from tempest.lib.services.image.v2 import namespaces_client
from tempest.lib.services.image.v2 import resource_types_client
from tempest.lib.services.image.v2 import schemas_client

BASE = sys.argv[1].rstrip('/')


class NoAuth:
    credentials = None

    def auth_request(self, method, url, headers, body, filters):
        h = dict(headers or {})
        h['X-Roles'] = 'admin'
        h['X-Tenant-Id'] = 'adminproject'
        return BASE + '/v2/' + url, h, body

    def base_url(self, filters):
        return BASE

    def get_token(self):
        return ''


def client(cls):
    return cls(NoAuth(), 'image', 'RegionOne')


CLIENTS = dict(
    namespaces_client=client(namespaces_client.NamespacesClient),
    namespace_objects_client=client(namespace_objects_client.NamespaceObjectsClient),
    namespace_properties_client=client(namespace_properties_client.NamespacePropertiesClient),
    namespace_tags_client=client(namespace_tags_client.NamespaceTagsClient),
    resource_types_client=client(resource_types_client.ResourceTypesClient),
    schemas_client=client(schemas_client.SchemasClient),
)

passed = failed = 0
for mod in (schema, namespaces, objects, properties, tags, resource_types):
    for name in sorted(dir(mod)):
        cls = getattr(mod, name)
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase) and cls.__module__ == mod.__name__):
            continue
        for meth in sorted(m for m in dir(cls) if m.startswith('test_')):
            tc = cls(meth)
            for k, v in CLIENTS.items():
                setattr(tc, k, v)
            try:
                try:
                    getattr(tc, meth)()
                finally:
                    # Cleanups (the namespaces the test made) must succeed too.
                    while tc._cleanups:
                        fn, args, kwargs = tc._cleanups.pop()
                        fn(*args, **kwargs)
                passed += 1
                print('PASS', cls.__name__, meth)
            except Exception:
                failed += 1
                print('FAIL', cls.__name__, meth)
                traceback.print_exc(file=sys.stdout)
print('passed', passed, 'failed', failed)
sys.exit(1 if failed else 0)
