"""Makes `import notes` work in the tests however pytest is started: pytest puts the folder
of this file (flask_app/, which is no package) on sys.path when it loads it."""
