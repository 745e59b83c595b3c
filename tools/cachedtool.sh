# cachedtool.sh is sourced by tools/*/build.sh, each of which prints the
# path of a test peer's binary (a server used only by the tests, never
# committed), building it first if the cached copy is missing or does not
# run.
#
# The caller sets name and version (the binary is
# ${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}/NAME-VERSION),
# label and note (for the build message), and defines two functions:
#   works BIN  succeeds if BIN runs and reports the version;
#   build OUT  builds the binary into OUT, from the caller's directory.
# cached_tool builds into a temporary file that is renamed into place only
# after it runs, so a killed build never leaves a broken binary behind, and
# concurrent callers wait for one build (flock). Build output goes to
# stderr; stdout carries only the path.

cached_tool() {
	cache=${SEALRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealrelay}
	bin=$cache/$name-$version
	if works "$bin"; then
		echo "$bin"
		return 0
	fi

	mkdir -p "$cache"
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$bin.lock"
		flock 9
		# Another caller may have built it while this one waited.
		if works "$bin"; then
			echo "$bin"
			return 0
		fi
	fi

	tmp=$(mktemp "$bin.tmp.XXXXXX")
	trap 'rm -f "$tmp"' EXIT INT TERM
	echo "build.sh: building $label v$version into $bin ($note)" >&2
	build "$tmp" >&2
	if ! works "$tmp"; then
		echo "build.sh: the built binary does not report $label v$version" >&2
		exit 1
	fi
	mv -f "$tmp" "$bin"
	trap - EXIT INT TERM
	echo "$bin"
}
