"""Boot real Debian 12 test hosts with systemd-nspawn, without Docker.

Why this exists: the machines that run our tests and CI have no container
engine, yet the roles and playbooks must be exercised against hosts that look
like production: systemd as PID 1, sshd, cron, their own hostname, address and
filesystem. systemd-nspawn gives exactly that from a plain directory tree.

Design, and the reasons for it:

* One Debian root filesystem is built once with debootstrap and cached outside
  the checkout (``/var/cache/quantshift-testbed/rootfs``), so repeated runs on
  one machine skip the ~90 s build. It is built in a temporary directory and
  renamed into place only when complete, with a marker file that records the
  recipe, so an interrupted build is never mistaken for a good cache and a
  changed recipe triggers a rebuild (``rootfs``, ``mirror``).
* Every host boots on an overlay whose lower layer is that shared, never
  modified tree; only the files a host writes land in its private upper
  directory. Sixteen hosts therefore cost sixteen small upper dirs and the
  memory of their own processes, not sixteen copies of Debian (``host``).
* Every host gets its own network namespace ``qs-NAME`` and a veth pair,
  ``10.231.INDEX.1/30`` on the controller side and ``10.231.INDEX.2/30`` inside
  the host. These are the only addresses this tool ever configures or talks
  to; the hosts have no default route, so nothing they do leaves the pair
  (``network``).
* nspawn runs detached (own session, stdin from /dev/null, console to a log
  file) with ``--register=no --keep-unit`` because the controller has no
  systemd/D-Bus to register machines with; processes are recognised by their
  command line and environment, never by a PID from a file (``processes``).
* ``down`` is idempotent and also repairs half-failed ``up`` runs; ``check-clean``
  proves nothing (process, namespace, link, mount, upper dir) is left behind
  (``cleanup``).

Everything is Python standard library plus the ``ip``, ``debootstrap``,
``systemd-nspawn``, ``ssh`` and ``ssh-keygen`` commands (see apt-packages.txt).
The command line is in ``cli``; ``molecule/shared/testbed.py`` runs it.
"""
